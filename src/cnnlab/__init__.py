"""cnnlab: the classic convolutional networks, built, trained and explained on PyTorch."""
import os

# OpenMP settings, made before torch loads libgomp (a value the user set wins; docs/performance.md):
# - waiting threads sleep instead of spinning: on busy shared cores a spinning thread holds the core
#   that the thread it waits for needs (training steps measured 6-9x slower);
# - one thread per core, pinned: oneDNN's AMX bf16 weight-gradient convolutions stall for about a
#   second per call when their threads migrate between cores (seen on a 2-core KVM guest). Not under
#   torchrun or with OMP_NUM_THREADS set, where processes would be pinned to the same cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if not {"LOCAL_RANK", "OMP_NUM_THREADS"} & set(os.environ):
    os.environ.setdefault("OMP_PROC_BIND", "true")

from .errors import CnnlabError  # noqa: E402
from .models import create_model, list_models, model_info  # noqa: E402

__all__ = ["CnnlabError", "create_model", "list_models", "model_info"]
__version__ = "0.1.0"
