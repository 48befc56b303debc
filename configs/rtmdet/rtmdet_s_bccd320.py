# RTMDet-s (CSPNeXt deepen 0.33 / widen 0.5, 128-channel neck and head) with the BCCD-320 recipe
# of rtmdet_tiny_bccd320.py (same data pipelines, schedule, EMA and pipeline switch). Untuned;
# accuracy and speed not measured.
_base_ = './rtmdet_tiny_bccd320.py'
model = dict(
    backbone=dict(deepen_factor=0.33, widen_factor=0.5),
    neck=dict(in_channels=[128, 256, 512], out_channels=128),
    bbox_head=dict(in_channels=128, feat_channels=128))
