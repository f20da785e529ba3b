from imgcls.models.registry import (
    create_model,
    get_head,
    get_model_info,
    list_models,
    parse_model_spec,
    register_model,
)

__all__ = ["create_model", "get_head", "get_model_info", "list_models", "parse_model_spec", "register_model"]
