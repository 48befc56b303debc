"""detforge: config-driven object detection on PyTorch and torchvision."""
__version__ = '0.1.0'
