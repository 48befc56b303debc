"""Backbones (registry ``BACKBONES``): ResNet (+ ResNeXt) and CSPNeXt.

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .cspnext import CSPNeXt
from .mobilenet_v3 import MobileNetV3
from .resnet import ResNet, BasicBlock, Bottleneck
from .resnext import ResNeXt, ResNeXtBottleneck

__all__ = ['CSPNeXt', 'MobileNetV3', 'ResNet', 'BasicBlock', 'Bottleneck', 'ResNeXt', 'ResNeXtBottleneck']
