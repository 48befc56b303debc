"""URL tables behind the checkpoint prefixes MMCV 1.x resolves.

Data copied from MMCV 1.7's ``mmcv/model_zoo/open_mmlab.json``, ``deprecated.json`` and
``mmcls.json`` (the entries a detector backbone can use; video, editing and HRNet entries are
left out). A name missing here raises an error that lists the known names.
"""

#: ``open-mmlab://NAME`` -> URL
OPEN_MMLAB = {
    'vgg16_caffe': 'https://download.openmmlab.com/pretrain/third_party/vgg16_caffe-292e1171.pth',
    'detectron/resnet50_caffe': 'https://download.openmmlab.com/pretrain/third_party/resnet50_caffe-788b5fa3.pth',
    'detectron2/resnet50_caffe': 'https://download.openmmlab.com/pretrain/third_party/resnet50_msra-5891d200.pth',
    'detectron/resnet101_caffe': 'https://download.openmmlab.com/pretrain/third_party/resnet101_caffe-3ad79236.pth',
    'detectron2/resnet101_caffe': 'https://download.openmmlab.com/pretrain/third_party/resnet101_msra-6cc46731.pth',
    'detectron2/resnext101_32x8d': 'https://download.openmmlab.com/pretrain/third_party/resnext101_32x8d-1516f1aa.pth',
    'resnext50_32x4d': 'https://download.openmmlab.com/pretrain/third_party/resnext50-32x4d-0ab1a123.pth',
    'resnext101_32x4d': 'https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d-a5af3160.pth',
    'resnext101_64x4d': 'https://download.openmmlab.com/pretrain/third_party/resnext101_64x4d-ee2c6f71.pth',
    'contrib/resnet50_gn': 'https://download.openmmlab.com/pretrain/third_party/resnet50_gn_thangvubk-ad1730dd.pth',
    'detectron/resnet50_gn': 'https://download.openmmlab.com/pretrain/third_party/resnet50_gn-9186a21c.pth',
    'detectron/resnet101_gn': 'https://download.openmmlab.com/pretrain/third_party/resnet101_gn-cac0ab98.pth',
    'jhu/resnet50_gn_ws': 'https://download.openmmlab.com/pretrain/third_party/resnet50_gn_ws-15beedd8.pth',
    'jhu/resnet101_gn_ws': 'https://download.openmmlab.com/pretrain/third_party/resnet101_gn_ws-3e3c308c.pth',
    'jhu/resnext50_32x4d_gn_ws': 'https://download.openmmlab.com/pretrain/third_party/resnext50_32x4d_gn_ws-0d87ac85.pth',
    'jhu/resnext101_32x4d_gn_ws': 'https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d_gn_ws-34ac1a9e.pth',
    'jhu/resnext50_32x4d_gn': 'https://download.openmmlab.com/pretrain/third_party/resnext50_32x4d_gn-c7e8b754.pth',
    'jhu/resnext101_32x4d_gn': 'https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d_gn-ac3bb84e.pth',
    'res2net101_v1d_26w_4s': 'https://download.openmmlab.com/pretrain/third_party/res2net101_v1d_26w_4s_mmdetv2-f0a600f9.pth',
    'regnetx_400mf': 'https://download.openmmlab.com/pretrain/third_party/regnetx_400mf-a5b10d96.pth',
    'regnetx_800mf': 'https://download.openmmlab.com/pretrain/third_party/regnetx_800mf-1f4be4c7.pth',
    'regnetx_1.6gf': 'https://download.openmmlab.com/pretrain/third_party/regnetx_1.6gf-5791c176.pth',
    'regnetx_3.2gf': 'https://download.openmmlab.com/pretrain/third_party/regnetx_3.2gf-c2599b0f.pth',
    'regnetx_4.0gf': 'https://download.openmmlab.com/pretrain/third_party/regnetx_4.0gf-a88f671e.pth',
    'regnetx_6.4gf': 'https://download.openmmlab.com/pretrain/third_party/regnetx_6.4gf-006af45d.pth',
    'regnetx_8.0gf': 'https://download.openmmlab.com/pretrain/third_party/regnetx_8.0gf-3c68abe7.pth',
    'regnetx_12gf': 'https://download.openmmlab.com/pretrain/third_party/regnetx_12gf-4c2a3350.pth',
    'resnet18_v1c': 'https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth',
    'resnet50_v1c': 'https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth',
    'resnet101_v1c': 'https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth',
    'resnest50': 'https://download.openmmlab.com/pretrain/third_party/resnest50_d2-7497a55b.pth',
    'resnest101': 'https://download.openmmlab.com/pretrain/third_party/resnest101_d2-f3b931b2.pth',
    'resnest200': 'https://download.openmmlab.com/pretrain/third_party/resnest200_d2-ca88e41f.pth',
    'darknet53': 'https://download.openmmlab.com/pretrain/third_party/darknet53-a628ea1b.pth',
}

#: old ``open-mmlab://`` names MMCV still accepts (with a deprecation warning) -> current name
OPEN_MMLAB_DEPRECATED = {
    'resnet50_caffe': 'detectron/resnet50_caffe',
    'resnet101_caffe': 'detectron/resnet101_caffe',
}

#: ``mmcls://NAME`` -> URL (MMClassification checkpoints; their ``backbone.`` keys are used)
MMCLS = {
    'resnet18': 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet18_batch256_imagenet_20200708-34ab8f90.pth',
    'resnet34': 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_batch256_imagenet_20200708-32ffb4f7.pth',
    'resnet50': 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_batch256_imagenet_20200708-cfb998bf.pth',
    'resnet101': 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet101_batch256_imagenet_20200708-753f3608.pth',
    'resnet152': 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet152_batch256_imagenet_20200708-ec25b1f9.pth',
    'resnet50_v1d': 'https://download.openmmlab.com/mmclassification/v0/resnet/resnetv1d50_batch256_imagenet_20200708-1ad0ce94.pth',
    'resnet101_v1d': 'https://download.openmmlab.com/mmclassification/v0/resnet/resnetv1d101_batch256_imagenet_20200708-9cb302ef.pth',
    'resnet152_v1d': 'https://download.openmmlab.com/mmclassification/v0/resnet/resnetv1d152_batch256_imagenet_20200708-e79cb6a2.pth',
    'resnext50_32x4d': 'https://download.openmmlab.com/mmclassification/v0/resnext/resnext50_32x4d_b32x8_imagenet_20210429-56066e27.pth',
    'resnext101_32x4d': 'https://download.openmmlab.com/mmclassification/v0/resnext/resnext101_32x4d_b32x8_imagenet_20210506-e0fa3dd5.pth',
    'resnext101_32x8d': 'https://download.openmmlab.com/mmclassification/v0/resnext/resnext101_32x8d_b32x8_imagenet_20210506-23a247d5.pth',
    'resnext152_32x4d': 'https://download.openmmlab.com/mmclassification/v0/resnext/resnext152_32x4d_b32x8_imagenet_20210524-927787be.pth',
    'mobilenet_v2': 'https://download.openmmlab.com/mmclassification/v0/mobilenet_v2/mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth',
}
