# BCCD-320 through the VOC route: the same folders and splits as bccd.py, read from the XML
# files (boxes identical to the COCO JSON), evaluated with VOC mAP at IoU 0.5.
_base_ = './bccd.py'
dataset_type = 'VOCDataset'
data_root = 'data/bccd/'
classes = ('RBC', 'WBC', 'Platelets')
data = dict(
    train=dict(
        _delete_=True,
        type=dataset_type,
        classes=classes,
        ann_file=data_root + 'ImageSets/Main/trainval.txt',
        img_prefix=data_root,
        pipeline={{_base_.train_pipeline}}),
    val=dict(
        _delete_=True,
        type=dataset_type,
        classes=classes,
        ann_file=data_root + 'ImageSets/Main/test.txt',
        img_prefix=data_root,
        pipeline={{_base_.test_pipeline}}),
    test=dict(
        _delete_=True,
        type=dataset_type,
        classes=classes,
        ann_file=data_root + 'ImageSets/Main/test.txt',
        img_prefix=data_root,
        pipeline={{_base_.test_pipeline}}))
evaluation = dict(interval=1, metric='mAP')
