"""Imports every model family once so that their registrations run (see registry._ensure_loaded)."""
from . import course  # noqa: F401
from . import lenet, alexnet, vgg, googlenet, resnet, xception, hybrids  # noqa: F401,E401
from . import fast, resnet_cifar  # noqa: F401,E401,E402
from . import text  # noqa: F401,E402
