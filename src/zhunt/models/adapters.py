"""Per-architecture access to the weights the Z hunt reads.

:func:`get_adapter` dispatches on ``model.config.model_type`` and returns a
:class:`ModelAdapter` that hands out, for decoder layer ``l`` (0-based,
``model.model.layers[l]``), a :class:`LayerWeights` of float32 CPU tensors:

* attention, split per head (``q_h = W_Q[h] @ x``; ``out = sum_h W_O[h] @ o_h``),
  with the grouped-query mapping explicit: query head ``h`` reads key/value
  head ``kv_head[h] = h // (H / H_kv)``, the convention of transformers'
  ``repeat_kv`` (kv head ``j`` serves query heads ``j*g .. j*g+g-1``);
* the *effective* multiplicative weight of the pre-attention RMSNorm, i.e. the
  vector ``g`` with ``input_layernorm(x) = g * x / rms(x)``. Llama and Qwen
  store ``g`` itself; Gemma 3 stores ``w`` and multiplies by ``1 + w``
  (``Gemma3RMSNorm.forward``), so the adapter returns ``1 + w``;
* the per-head QK-norm effective weights (Qwen3: ``w``; Gemma 3: ``1 + w``),
  ``None`` where the architecture has none (Qwen2, Llama);
* the gated MLP: ``mlp(x) = down @ (act(gate @ x) * (up @ x))``;
* the decoder layer module itself (hook target).

RoPE is not part of any weight here. Biases (Qwen2's q/k/v biases) are not
part of the contract's bilinear forms; they are exposed as the optional
fields ``b_Q`` (H, d_head), ``b_K``/``b_V`` (H_kv, d_head) for completeness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from zhunt.errors import ZhuntError

__all__ = [
    "LayerWeights",
    "ModelAdapter",
    "LlamaFamilyAdapter",
    "Qwen3Adapter",
    "Gemma3Adapter",
    "SUPPORTED_MODEL_TYPES",
    "get_adapter",
]


@dataclass
class LayerWeights:
    """Weights of one decoder layer; every tensor is float32, CPU, detached (a copy).

    Shapes (``H`` query heads, ``H_kv`` key/value heads, ``d`` hidden size,
    ``d_head`` head size, ``d_ff`` MLP width):

    ``W_Q`` (H, d_head, d), ``W_K``/``W_V`` (H_kv, d_head, d), ``W_O`` (H, d, d_head),
    ``kv_head`` (H,) int64, ``attn_norm`` (d,), ``q_norm``/``k_norm`` (d_head,) or None,
    ``gate``/``up`` (d_ff, d), ``down`` (d, d_ff).

    Optional extras: ``b_Q`` (H, d_head), ``b_K``/``b_V`` (H_kv, d_head) biases or None;
    ``mlp_norm`` (d,) effective weight of the norm that feeds the MLP (Qwen/Llama:
    ``post_attention_layernorm``; Gemma 3: ``pre_feedforward_layernorm``);
    ``attn_scale`` the factor multiplying q·k before the softmax
    (``head_dim**-0.5``; Gemma 3: ``query_pre_attn_scalar**-0.5``);
    ``act_fn`` the MLP activation callable of the module.
    """

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    kv_head: torch.Tensor
    attn_norm: torch.Tensor
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    module: nn.Module
    b_Q: torch.Tensor | None = None
    b_K: torch.Tensor | None = None
    b_V: torch.Tensor | None = None
    mlp_norm: torch.Tensor | None = None
    attn_scale: float | None = None
    act_fn: Callable[[torch.Tensor], torch.Tensor] | None = None


def _f32(t: torch.Tensor) -> torch.Tensor:
    """A detached float32 CPU copy."""
    return t.detach().to(device="cpu", dtype=torch.float32).clone()


class ModelAdapter:
    """Architecture-neutral view of a decoder-only causal LM (base class).

    Subclasses set :attr:`model_types` and, where the architecture differs,
    override :meth:`norm_weight` (effective RMSNorm multiplier),
    :attr:`has_qk_norm`, :attr:`mlp_norm_name` and :meth:`attn_scale`.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    has_qk_norm: ClassVar[bool] = False
    mlp_norm_name: ClassVar[str] = "post_attention_layernorm"

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = _text_config(model.config)
        self.decoder = _decoder_stack(model)
        self.layers: list[nn.Module] = list(self.decoder.layers)
        self.num_layers: int = len(self.layers)
        self.hidden_size: int = int(self.config.hidden_size)
        self.num_heads: int = int(self.config.num_attention_heads)
        self.num_kv_heads: int = int(getattr(self.config, "num_key_value_heads", None) or self.num_heads)
        attn = self.layers[0].self_attn
        self.head_dim: int = int(getattr(attn, "head_dim", None)
                                 or getattr(self.config, "head_dim", None)
                                 or self.hidden_size // self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ZhuntError("model_type", f"num_attention_heads={self.num_heads} is not a multiple of "
                                           f"num_key_value_heads={self.num_kv_heads}")

    # -- architecture hooks -------------------------------------------------------------
    def norm_weight(self, norm: nn.Module) -> torch.Tensor:
        """Effective multiplicative weight ``g`` of an RMSNorm: ``norm(x) = g * x / rms(x)``."""
        return _f32(norm.weight)

    def attn_scale(self) -> float:
        return float(self.head_dim) ** -0.5

    # -- public API ---------------------------------------------------------------------
    @property
    def model_type(self) -> str:
        return self.config.model_type

    def kv_head_map(self) -> torch.Tensor:
        """(H,) int64: query head h reads kv head ``h // (H / H_kv)`` (transformers' ``repeat_kv``)."""
        group = self.num_heads // self.num_kv_heads
        return torch.arange(self.num_heads, dtype=torch.int64) // group

    def layer_weights(self, layer: int) -> LayerWeights:
        """The weights of decoder layer ``layer`` (0-based) as a :class:`LayerWeights`."""
        if not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ZhuntError("layer", f"layer {layer!r} out of range: {self.model_type} model has decoder "
                                      f"layers 0..{self.num_layers - 1}")
        mod = self.layers[layer]
        attn, mlp = mod.self_attn, mod.mlp
        H, Hkv, dh, d = self.num_heads, self.num_kv_heads, self.head_dim, self.hidden_size

        def split_rows(lin: nn.Linear, heads: int) -> torch.Tensor:
            return _f32(lin.weight).reshape(heads, dh, d)

        def bias(lin: nn.Linear, heads: int) -> torch.Tensor | None:
            return None if lin.bias is None else _f32(lin.bias).reshape(heads, dh)

        # o_proj.weight is (d, H*dh); column block h acts on head h's output.
        W_O = _f32(attn.o_proj.weight).reshape(d, H, dh).permute(1, 0, 2).contiguous()
        mlp_norm = getattr(mod, self.mlp_norm_name, None)
        return LayerWeights(
            W_Q=split_rows(attn.q_proj, H),
            W_K=split_rows(attn.k_proj, Hkv),
            W_V=split_rows(attn.v_proj, Hkv),
            W_O=W_O,
            kv_head=self.kv_head_map(),
            attn_norm=self.norm_weight(mod.input_layernorm),
            q_norm=self.norm_weight(attn.q_norm) if self.has_qk_norm else None,
            k_norm=self.norm_weight(attn.k_norm) if self.has_qk_norm else None,
            gate=_f32(mlp.gate_proj.weight),
            up=_f32(mlp.up_proj.weight),
            down=_f32(mlp.down_proj.weight),
            module=mod,
            b_Q=bias(attn.q_proj, H),
            b_K=bias(attn.k_proj, Hkv),
            b_V=bias(attn.v_proj, Hkv),
            mlp_norm=None if mlp_norm is None else self.norm_weight(mlp_norm),
            attn_scale=self.attn_scale(),
            act_fn=getattr(mlp, "act_fn", None),
        )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.model_type}: L={self.num_layers}, d={self.hidden_size}, "
                f"H={self.num_heads}, H_kv={self.num_kv_heads}, d_head={self.head_dim})")


class LlamaFamilyAdapter(ModelAdapter):
    """Llama (SmolLM2) and Qwen2 (Qwen2.5, the organism): plain RMSNorm ``g * x / rms(x)``, no QK norm.

    Qwen2 has q/k/v biases (exposed as ``b_Q``/``b_K``/``b_V``); Llama has none by default.
    """

    model_types = ("llama", "qwen2")


class Qwen3Adapter(ModelAdapter):
    """Qwen3: Llama-style RMSNorm plus per-head RMSNorm on q and k (``Qwen3RMSNorm``, weight used as is)."""

    model_types = ("qwen3",)
    has_qk_norm = True


class Gemma3Adapter(ModelAdapter):
    """Gemma 3 (text model, or the text part of the multimodal model).

    ``Gemma3RMSNorm`` computes ``x / rms(x) * (1 + w)`` (weights initialised at 0),
    so every effective norm weight returned here is ``1 + w``. The attention
    scale is ``query_pre_attn_scalar ** -0.5``; the MLP input norm is
    ``pre_feedforward_layernorm`` (``post_attention_layernorm`` normalises the
    attention *output* before the residual add).
    """

    model_types = ("gemma3_text", "gemma3")
    has_qk_norm = True
    mlp_norm_name = "pre_feedforward_layernorm"

    def norm_weight(self, norm: nn.Module) -> torch.Tensor:
        return 1.0 + _f32(norm.weight)

    def attn_scale(self) -> float:
        scalar = getattr(self.config, "query_pre_attn_scalar", None) or self.head_dim
        return float(scalar) ** -0.5


_ADAPTERS: dict[str, type[ModelAdapter]] = {
    mt: cls for cls in (LlamaFamilyAdapter, Qwen3Adapter, Gemma3Adapter) for mt in cls.model_types
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_ADAPTERS))


def _text_config(config):
    """The text-model config (multimodal Gemma 3 keeps it in ``text_config``)."""
    if getattr(config, "model_type", None) == "gemma3" and getattr(config, "text_config", None) is not None:
        return config.text_config
    return config


def _decoder_stack(model: nn.Module) -> nn.Module:
    """The module that owns ``.layers``: ``model.model`` (CausalLM), the model itself (base
    model) or ``model.model.language_model`` (multimodal Gemma 3)."""
    for path in ("model.language_model", "language_model", "model", ""):
        mod = model
        for part in filter(None, path.split(".")):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if mod is not None and isinstance(getattr(mod, "layers", None), nn.ModuleList):
            return mod
    raise ZhuntError("model_type", f"cannot find the decoder layers of {type(model).__name__}")


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``, chosen by ``model.config.model_type``.

    Raises :class:`ZhuntError` (``model_type``) for an unsupported architecture.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = _ADAPTERS.get(model_type)
    if cls is None:
        raise ZhuntError("model_type", f"unsupported architecture {model_type!r} "
                                       f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    return cls(model)
