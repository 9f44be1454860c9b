"""The course's six CIFAR-10 networks, each built from its shipped CBAPD spec in ``cnnlab/specs``."""
from __future__ import annotations

from importlib.resources import files
from typing import Any

from torch import nn

from ..spec import build, build_spec_file
from .registry import Factory, register_model

# name -> the course script that defines it (TF2 course chapter on CNNs, "六个经典卷积网络")
COURSE_NETWORKS: dict[str, str] = {
    "baseline-cifar": "course CNN chapter, Baseline (p27_cifar10_baseline.py)",
    "lenet5-cifar": "course CNN chapter, LeNet5 (p31_cifar10_lenet5.py); LeCun et al. 1998",
    "alexnet8-cifar": "course CNN chapter, AlexNet8 (p34_cifar10_alexnet8.py); Krizhevsky et al. 2012",
    "vgg16-cifar": "course CNN chapter, VGG16 (p36_cifar10_vgg16.py); Simonyan & Zisserman 2015",
    "inception10-cifar": "course CNN chapter, Inception10 (p40_cifar10_inception10.py); Szegedy et al. 2015",
    "resnet18-cifar": "course CNN chapter, ResNet18 (p46_cifar10_resnet18.py); He et al. 2016",
}


def spec_path(name: str) -> Any:
    """The shipped ``.cbapd`` file of a course network (an importlib.resources Traversable)."""
    return files("cnnlab").joinpath("specs", f"{name}.cbapd")


def _factory(name: str) -> Factory:
    """A registry factory that builds ``name`` from its spec file."""

    def create(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **kw: Any) -> nn.Module:
        return build_spec_file(spec_path(name), num_classes, in_channels, input_size, **kw)

    create.__name__ = create.__qualname__ = name.replace("-", "_")
    create.__doc__ = f"The course's {name} (logits out), built from specs/{name}.cbapd."
    return create


# Course networks whose training defaults to channels_last (runs/recipes.py): inception10-cifar's
# 3x3 stride-1 pools and 1x1 convolutions ran 1.37-1.53x faster in fp32 channels_last in four
# side-by-side runs (docs/performance.md §1b-§1d); for the other five NHWC lost or was within noise.
CHANNELS_LAST = {"inception10-cifar"}

for _name, _source in COURSE_NETWORKS.items():
    register_model(_name, family="course", input_size=(3, 32, 32), num_classes=10, source=_source, options=build,
                   recipe="course-channels-last" if _name in CHANNELS_LAST else None)(_factory(_name))
