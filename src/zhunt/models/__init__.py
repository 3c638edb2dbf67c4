"""Models: the registry loader (HF folder / GGUF / hub) and per-architecture weight adapters.

Heavy imports (transformers) happen inside the functions, so importing
``zhunt.models`` stays cheap.
"""

from zhunt.models.adapters import SUPPORTED_MODEL_TYPES, LayerWeights, ModelAdapter, get_adapter
from zhunt.models.gguf import sha256_file
from zhunt.models.loader import (PROVENANCE_FILE, load_model, pick_device, prepare_model_folder, read_provenance,
                     resolve_dtype)

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "LayerWeights",
    "ModelAdapter",
    "get_adapter",
    "sha256_file",
    "PROVENANCE_FILE",
    "load_model",
    "pick_device",
    "prepare_model_folder",
    "read_provenance",
    "resolve_dtype",
]
