"""Adapters: per-head weights checked numerically against the real transformers modules.

Tiny random models (2 layers, d=64, 4 heads / 2 kv heads, d_head=16, vocab 100) of
every supported architecture; norm weights and biases are randomised so that
"effective weight" mistakes (Gemma's 1 + w) cannot hide behind an all-ones init.
Tolerance: float32, atol 1e-5 (rtol 1e-5).
"""

from types import SimpleNamespace

import pytest
import torch

from zhunt.errors import ZhuntError
from zhunt.models.adapters import (Gemma3Adapter, LayerWeights, LlamaFamilyAdapter, Qwen3Adapter,
                                   SUPPORTED_MODEL_TYPES, get_adapter)

ATOL = 1e-5
RTOL = 1e-5
D, H, HKV, DH, VOCAB, LAYERS, DFF = 64, 4, 2, 16, 100, 2, 96
ARCHS = ["qwen2", "qwen3", "llama", "gemma3_text"]


def _config(arch):
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=DFF, num_hidden_layers=LAYERS,
                  num_attention_heads=H, num_key_value_heads=HKV, head_dim=DH, max_position_embeddings=64)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "qwen3":
        return tf.Qwen3Config(**common)
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "gemma3_text":
        return tf.Gemma3TextConfig(**common, query_pre_attn_scalar=24)
    raise AssertionError(arch)


def _tiny(arch):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(arch), attn_implementation="eager").eval()
    gemma = arch.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # Gemma stores w (effective 1 + w, init 0); the others store g (init 1)
                p.copy_((0.0 if gemma else 1.0) + 0.5 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request):
    model = _tiny(request.param)
    return request.param, model, get_adapter(model)


def _rms(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_dispatch_and_shapes(tiny):
    arch, model, ad = tiny
    expected = {"qwen2": LlamaFamilyAdapter, "llama": LlamaFamilyAdapter, "qwen3": Qwen3Adapter,
                "gemma3_text": Gemma3Adapter}[arch]
    assert type(ad) is expected
    assert (ad.num_layers, ad.hidden_size, ad.num_heads, ad.num_kv_heads, ad.head_dim) == (LAYERS, D, H, HKV, DH)
    w = ad.layer_weights(1)
    assert isinstance(w, LayerWeights)
    assert w.W_Q.shape == (H, DH, D)
    assert w.W_K.shape == w.W_V.shape == (HKV, DH, D)
    assert w.W_O.shape == (H, D, DH)
    assert w.kv_head.dtype == torch.int64 and w.kv_head.tolist() == [0, 0, 1, 1]
    assert w.attn_norm.shape == (D,)
    assert w.gate.shape == w.up.shape == (DFF, D) and w.down.shape == (D, DFF)
    has_qk = arch in ("qwen3", "gemma3_text")
    assert (w.q_norm is not None) == has_qk and (w.k_norm is not None) == has_qk
    if has_qk:
        assert w.q_norm.shape == w.k_norm.shape == (DH,)
    assert (w.b_Q is not None) == (arch == "qwen2")
    for t in (w.W_Q, w.W_K, w.W_V, w.W_O, w.attn_norm, w.gate, w.up, w.down):
        assert t.dtype == torch.float32 and t.device.type == "cpu" and not t.requires_grad
    # a copy: editing it leaves the model alone
    before = ad.layers[1].self_attn.q_proj.weight.detach().clone()
    w.W_Q.zero_()
    assert torch.equal(ad.layers[1].self_attn.q_proj.weight, before)


def test_layers_are_the_model_modules(tiny):
    _, model, ad = tiny
    assert len(ad.layers) == LAYERS
    for i in range(LAYERS):
        assert ad.layers[i] is model.model.layers[i]
        assert ad.layer_weights(i).module is model.model.layers[i]


def test_attn_norm_effective_weight(tiny):
    _, model, ad = tiny
    torch.manual_seed(1)
    x = 3.0 * torch.randn(5, D)
    eps = model.config.rms_norm_eps
    for i in range(LAYERS):
        w = ad.layer_weights(i)
        with torch.no_grad():
            ref = ad.layers[i].input_layernorm(x)
        torch.testing.assert_close(w.attn_norm * _rms(x, eps), ref, atol=ATOL, rtol=RTOL)
        mlp_norm_mod = getattr(ad.layers[i], ad.mlp_norm_name)
        with torch.no_grad():
            ref = mlp_norm_mod(x)
        torch.testing.assert_close(w.mlp_norm * _rms(x, eps), ref, atol=ATOL, rtol=RTOL)


def test_per_head_projections(tiny):
    """W_Q[h] @ x (+ b) equals the head-h slice of q_proj(x); same for k/v; W_O reassembles o_proj."""
    _, model, ad = tiny
    torch.manual_seed(2)
    x = torch.randn(7, D)
    for i in range(LAYERS):
        w, attn = ad.layer_weights(i), ad.layers[i].self_attn
        with torch.no_grad():
            q = attn.q_proj(x).view(7, H, DH)
            k = attn.k_proj(x).view(7, HKV, DH)
            v = attn.v_proj(x).view(7, HKV, DH)
        for h in range(H):
            mine = x @ w.W_Q[h].T + (w.b_Q[h] if w.b_Q is not None else 0)
            torch.testing.assert_close(mine, q[:, h], atol=ATOL, rtol=RTOL)
        for j in range(HKV):
            torch.testing.assert_close(x @ w.W_K[j].T + (w.b_K[j] if w.b_K is not None else 0), k[:, j],
                                       atol=ATOL, rtol=RTOL)
            torch.testing.assert_close(x @ w.W_V[j].T + (w.b_V[j] if w.b_V is not None else 0), v[:, j],
                                       atol=ATOL, rtol=RTOL)
        o = torch.randn(7, H, DH)
        with torch.no_grad():
            ref = attn.o_proj(o.reshape(7, H * DH))
        mine = sum(o[:, h] @ w.W_O[h].T for h in range(H))
        torch.testing.assert_close(mine, ref, atol=ATOL, rtol=RTOL)


def test_kv_mapping_matches_repeat_kv(tiny):
    import importlib

    arch, _, ad = tiny
    mod = importlib.import_module(f"transformers.models.{arch.removesuffix('_text')}.modeling_"
                                  f"{arch.removesuffix('_text')}")
    keys = torch.randn(1, HKV, 3, DH)
    rep = mod.repeat_kv(keys, H // HKV)
    kv = ad.layer_weights(0).kv_head
    for h in range(H):
        assert torch.equal(rep[0, h], keys[0, kv[h]])


def test_attention_reconstructed_from_adapter(tiny):
    """The full attention block (RoPE set to identity) rebuilt from adapter weights only:
    attn_norm, W_Q/W_K/W_V (+ biases), q_norm/k_norm, kv_head, attn_scale, W_O."""
    _, model, ad = tiny
    T = 6
    eps = model.config.rms_norm_eps
    torch.manual_seed(3)
    x = 2.0 * torch.randn(1, T, D)
    cos, sin = torch.ones(1, T, DH), torch.zeros(1, T, DH)  # identity rotation
    mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)[None, None]
    for i in range(LAYERS):
        w, layer = ad.layer_weights(i), ad.layers[i]
        with torch.no_grad():
            xn = layer.input_layernorm(x)
            ref = layer.self_attn(hidden_states=xn, position_embeddings=(cos, sin), attention_mask=mask)[0][0]
        z = w.attn_norm * _rms(x[0], eps)
        out = torch.zeros(T, D)
        for h in range(H):
            j = int(w.kv_head[h])
            q = z @ w.W_Q[h].T + (w.b_Q[h] if w.b_Q is not None else 0)
            k = z @ w.W_K[j].T + (w.b_K[j] if w.b_K is not None else 0)
            v = z @ w.W_V[j].T + (w.b_V[j] if w.b_V is not None else 0)
            if w.q_norm is not None:
                q, k = w.q_norm * _rms(q, eps), w.k_norm * _rms(k, eps)
            scores = (q @ k.T) * w.attn_scale + mask[0, 0]
            out += (scores.softmax(-1) @ v) @ w.W_O[h].T
        torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)


def test_mlp_reconstructed(tiny):
    _, _, ad = tiny
    torch.manual_seed(4)
    x = torch.randn(5, D)
    for i in range(LAYERS):
        w, mlp = ad.layer_weights(i), ad.layers[i].mlp
        assert w.act_fn is mlp.act_fn
        with torch.no_grad():
            ref = mlp(x)
        mine = (mlp.act_fn(x @ w.gate.T) * (x @ w.up.T)) @ w.down.T
        torch.testing.assert_close(mine, ref, atol=ATOL, rtol=RTOL)


def test_gemma_norm_is_one_plus_w():
    model = _tiny("gemma3_text")
    w = get_adapter(model).layer_weights(0)
    layer = model.model.layers[0]
    torch.testing.assert_close(w.attn_norm, 1.0 + layer.input_layernorm.weight.detach())
    torch.testing.assert_close(w.q_norm, 1.0 + layer.self_attn.q_norm.weight.detach())
    assert w.attn_scale == pytest.approx(24 ** -0.5)


def test_bfloat16_model_gives_float32_weights():
    model = _tiny("qwen2").to(torch.bfloat16)
    w = get_adapter(model).layer_weights(0)
    assert w.W_Q.dtype == torch.float32 and w.attn_norm.dtype == torch.float32
    torch.testing.assert_close(w.W_Q.reshape(H * DH, D), model.model.layers[0].self_attn.q_proj.weight.float())


def test_unsupported_architecture():
    fake = SimpleNamespace(config=SimpleNamespace(model_type="gpt2"))
    with pytest.raises(ZhuntError) as err:
        get_adapter(fake)
    assert err.value.where == "model_type"
    assert "unsupported architecture 'gpt2'" in str(err.value)
    assert all(mt in str(err.value) for mt in ("qwen2", "qwen3", "llama", "gemma3_text"))
    assert "\n" not in str(err.value)
    assert set(SUPPORTED_MODEL_TYPES) >= {"qwen2", "qwen3", "llama", "gemma3_text", "gemma3"}


def test_layer_out_of_range(tiny):
    _, _, ad = tiny
    with pytest.raises(ZhuntError, match="out of range"):
        ad.layer_weights(LAYERS)


def test_gemma3_multimodal_text_part():
    """A multimodal Gemma3Config (model_type 'gemma3') is read through its text model."""
    import transformers as tf

    text = _config("gemma3_text")
    vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                   num_attention_heads=2, image_size=28, patch_size=14)
    cfg = tf.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4)
    torch.manual_seed(0)
    model = tf.Gemma3ForConditionalGeneration(cfg).eval()
    ad = get_adapter(model)
    assert isinstance(ad, Gemma3Adapter)
    assert ad.layers[0] is model.model.language_model.layers[0]
    assert (ad.num_layers, ad.hidden_size, ad.head_dim) == (LAYERS, D, DH)
    assert ad.layer_weights(0).attn_scale == pytest.approx(24 ** -0.5)
