"""Training and evaluation: RunConfig, the fit loop, checkpoints and history."""
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig
from .fit import Callbacks, evaluate, fit, predict_logits
from .history import History
from .run import EvalResult, evaluate_run, load_trained, train

__all__ = ["Callbacks", "EvalResult", "History", "RunConfig", "evaluate", "evaluate_run", "fit",
           "load_checkpoint", "load_trained", "predict_logits", "save_checkpoint", "train"]
