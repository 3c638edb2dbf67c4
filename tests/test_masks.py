"""Z-masks against a brute-force SVD of the explicit stacked kernel."""

from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from zhunt.weights.masks import head_factors, read_mask, top_right_singular, write_masks, z_masks
from zhunt.subspace import grassmann_similarity


def fake_layer(H=4, H_kv=2, d_head=12, d=24, qk_norm=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        W_Q=torch.randn(H, d_head, d, generator=g),
        W_K=torch.randn(H_kv, d_head, d, generator=g),
        attn_norm=1.0 + 0.3 * torch.randn(d, generator=g),
        kv_head=torch.arange(H) // (H // H_kv),
        q_norm=(1.0 + 0.2 * torch.randn(d_head, generator=g)) if qk_norm else None,
        k_norm=(1.0 + 0.2 * torch.randn(d_head, generator=g)) if qk_norm else None,
    )


def explicit_kernels(w):
    """A_h built the slow, literal way: d x d per head."""
    g = torch.diag(w.attn_norm.double())
    out = []
    for h in range(w.W_Q.shape[0]):
        q = w.W_Q[h].double()
        k = w.W_K[int(w.kv_head[h])].double()
        if w.q_norm is not None:
            q = torch.diag(w.q_norm.double()) @ q
            k = torch.diag(w.k_norm.double()) @ k
        out.append(((q @ g).T @ (k @ g)).numpy())
    return out


@pytest.mark.parametrize("qk_norm", [False, True])
def test_multihead_mask_equals_stacked_svd(qk_norm):
    w = fake_layer(qk_norm=qk_norm)
    A = explicit_kernels(w)
    stacked = np.concatenate(A, axis=0)  # (H d, d), brute force
    _, s_ref, Vt_ref = np.linalg.svd(stacked)
    m = z_masks(w, ks=[3, 10], kinds=["multihead", "head0"])
    assert_allclose(m["multihead"]["sigma"], s_ref, rtol=1e-8, atol=1e-8 * s_ref[0])
    for k in (3, 10):
        V = m["multihead"]["V"][k]
        assert_allclose(V @ V.T, np.eye(k), atol=1e-10)
        assert grassmann_similarity(V, Vt_ref[:k]) > 1 - 1e-6
    _, s0, Vt0 = np.linalg.svd(A[0])
    assert_allclose(m["head0"]["sigma"], s0, rtol=1e-8, atol=1e-8 * s0[0])
    assert grassmann_similarity(m["head0"]["V"][3], Vt0[:3]) > 1 - 1e-6


def test_gqa_mapping_matters():
    w = fake_layer()
    Q, K, kv = head_factors(w)
    assert list(kv) == [0, 0, 1, 1]
    assert_allclose(K[1], K[0])
    assert not np.allclose(K[2], K[0])


def test_head0_k_above_head_dim_rejected():
    with pytest.raises(ValueError, match="head_dim"):
        z_masks(fake_layer(d_head=8), ks=[9], kinds=["head0"])


def test_k_range_checked():
    G = np.eye(5)
    with pytest.raises(ValueError):
        top_right_singular(G, 5)
    with pytest.raises(ValueError):
        top_right_singular(G, 0)


def test_write_read_roundtrip(tmp_path):
    w = fake_layer()
    m = z_masks(w, ks=[2, 5])
    p = tmp_path / "L0.h5"
    write_masks(p, m, {"model": "fake", "layer": 0})
    assert_allclose(read_mask(p, "multihead", 5), m["multihead"]["V"][5])
    with h5py.File(p) as f:
        assert f.attrs["model"] == "fake"
        assert f["head0/singular_values"].shape == (24,)
    assert [x.name for x in tmp_path.iterdir()] == ["L0.h5"]


def test_deterministic():
    a = z_masks(fake_layer(seed=3), ks=[4])["multihead"]["V"][4]
    b = z_masks(fake_layer(seed=3), ks=[4])["multihead"]["V"][4]
    assert np.array_equal(a, b)


def test_masks_from_a_real_tiny_model_match_brute_force():
    """Adapter + masks vs the stacked kernel built straight from the module's weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from zhunt.models import get_adapter

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64)
    model = Qwen2ForCausalLM(cfg).eval()
    layer = model.model.layers[1]
    with torch.no_grad():
        layer.input_layernorm.weight.uniform_(0.5, 1.5)
    g = layer.input_layernorm.weight.double()
    Wq = layer.self_attn.q_proj.weight.double().reshape(4, 8, 32)
    Wk = layer.self_attn.k_proj.weight.double().reshape(2, 8, 32)
    stacked = torch.cat([(Wq[h] * g).T @ (Wk[h // 2] * g) for h in range(4)]).detach().numpy()
    _, s_ref, Vt_ref = np.linalg.svd(stacked)

    m = z_masks(get_adapter(model).layer_weights(1), ks=[5], kinds=["multihead"])
    assert_allclose(m["multihead"]["sigma"], s_ref, rtol=1e-5, atol=1e-5 * s_ref[0])
    assert grassmann_similarity(m["multihead"]["V"][5], Vt_ref[:5]) > 1 - 1e-6
