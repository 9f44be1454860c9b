"""Model families and the registry that names them."""
from .registry import (ModelInfo, create_model, default_input_size, is_text_model, list_models, model_info,
                       register_model)

__all__ = ["ModelInfo", "create_model", "default_input_size", "is_text_model", "list_models", "model_info",
           "register_model"]
