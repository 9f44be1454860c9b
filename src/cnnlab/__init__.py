"""cnnlab: the classic convolutional networks, built, trained and explained on PyTorch."""
from .errors import CnnlabError
from .models import create_model, list_models, model_info

__all__ = ["CnnlabError", "create_model", "list_models", "model_info"]
__version__ = "0.1.0"
