"""Count the torchvision files whose Python code runs in one RetinaNet training step, the way
``tests/test_design_map.py`` counts detforge's (``sys.setprofile``, every ``call`` event).

    python tools/trace_torchvision_step.py

The step: ``model(images, targets)`` (transform, ResNet-18-FPN, head, anchors, matching,
losses), ``loss.backward()`` and ``optimizer.step()`` of a torchvision ``RetinaNet`` on one
random 320x427 image. The user's own training loop (one more file) is not counted, nor torch's.
"""
import sys
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


def main() -> int:
    root = Path(torchvision.__file__).parent
    backbone = resnet_fpn_backbone(backbone_name='resnet18', weights=None, trainable_layers=5,
                                   returned_layers=[2, 3, 4],
                                   extra_blocks=LastLevelP6P7(256, 256))
    model = RetinaNet(backbone, num_classes=3, min_size=320, max_size=427).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    images = [torch.rand(3, 320, 427)]
    targets = [dict(boxes=torch.tensor([[10., 20., 100., 120.]]), labels=torch.tensor([1]))]
    seen = set()

    def profile(frame, event, arg):
        if event == 'call':
            path = Path(frame.f_code.co_filename)
            if root in path.parents:
                seen.add(path.relative_to(root).as_posix())
    sys.setprofile(profile)
    try:
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    finally:
        sys.setprofile(None)
    print(f'torchvision {torchvision.__version__}: {len(seen)} files run in one RetinaNet '
          f'training step (plus the user\'s training loop):')
    for name in sorted(seen):
        print(f'  torchvision/{name}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
