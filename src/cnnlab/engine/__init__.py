"""The engine: the fit loop and its callbacks, evaluation, checkpoints, optimizers and learning-rate rules,
history, mixed precision, DDP helpers.

It knows no model name and no dataset format: it takes a module, loaders and a ``FitConfig``.
The application layer above it (``cnnlab.runs``) turns names and options into those.
"""
from .callbacks import Callback
from .checkpoint import load_checkpoint, save_checkpoint
from .config import FitConfig
from .evaluate import evaluate, evaluate_metrics, predict_logits
from .fit import Trainer, TrainingInterrupted, fit
from .history import History
from .optim import make_optimizer

__all__ = ["Callback", "FitConfig", "History", "Trainer", "TrainingInterrupted", "evaluate", "evaluate_metrics",
           "fit", "load_checkpoint", "make_optimizer", "predict_logits", "save_checkpoint"]
