"""Tests for zhunt.experiments.ablation: the M_s ablation h <- h - lam P h over a layer group, and the M_s basis file."""

import numpy as np
import pandas as pd
import pytest
import torch

from zhunt.experiments.ablation import ablate_subspace, ablation_fn, read_ms_basis, write_ms_basis
from zhunt.errors import ZhuntError
from zhunt.models.generation import generate, score

transformers = pytest.importorskip("transformers")

PROMPTS = ["what is 23 plus 14? a:", "hi", "abc def", "q: 7 times 8?", "x"]
D = 32


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=64, hidden_size=D, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        m.lm_head.weight[2] *= 0.0  # no early eos
    return m


def basis(r, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((D, r)))
    return q.T.astype(np.float32)


def test_ablation_fn_formula():
    V = basis(3, 0)
    h = np.random.default_rng(1).standard_normal((2, 5, D)).astype(np.float32)
    for lam in (0.0, 0.5, 1.0, 2.0):
        got = ablation_fn(V, lam)(torch.from_numpy(h)).numpy()
        np.testing.assert_allclose(got, h - lam * h @ V.T @ V, atol=1e-5)
    # lam = 1 leaves nothing in span(V)
    np.testing.assert_allclose(ablation_fn(V, 1.0)(torch.from_numpy(h)).numpy() @ V.T, 0, atol=1e-5)
    out = ablation_fn(V, 1.0)(torch.from_numpy(h).to(torch.bfloat16))
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("site", ["input", "output"])
def test_group_edits_every_position_of_every_layer(model, tok, site):
    """At each layer of the group, the stream downstream sees (I - lam P_l) applied to the raw stream, at
    prefill and at every decode step; layers outside the group are untouched."""
    group, lam = [0, 2], 0.7
    bases = {0: basis(2, 0), 2: basis(4, 1)}
    layers = model.model.layers
    raw, edited = {l: [] for l in group}, {l: [] for l in group}
    with ablate_subspace(model, bases, group, site=site, lam=lam):
        hds = []
        for l in group:  # registered after the ablation: prepend -> before it, append -> after it
            if site == "input":
                hds.append(layers[l].register_forward_pre_hook(
                    lambda m, a, l=l: raw[l].append(a[0].detach().clone()), prepend=True))
                hds.append(layers[l].register_forward_pre_hook(
                    lambda m, a, l=l: edited[l].append(a[0].detach().clone())))
            else:
                hds.append(layers[l].register_forward_hook(
                    lambda m, a, o, l=l: raw[l].append(o.detach().clone()), prepend=True))
                hds.append(layers[l].register_forward_hook(
                    lambda m, a, o, l=l: edited[l].append(o.detach().clone())))
        try:
            generate(model, tok, PROMPTS, max_new_tokens=4, batch_size=3)
        finally:
            for hd in hds:
                hd.remove()
    for l in group:
        V = bases[l]
        assert len(raw[l]) == 2 * 4  # 2 batches x (prefill + 3 decode steps)
        assert any(h.shape[1] == 1 for h in raw[l])  # decode steps are edited too
        for r, e in zip(raw[l], edited[l]):
            r = r.numpy()
            np.testing.assert_allclose(e.numpy(), r - lam * r @ V.T @ V, atol=1e-5)


def test_single_layer_equals_edits_at_every_position(model, tok):
    """One layer: the ablation equals generate's per-prompt callable edits with patch_special=True and
    positions='all' (the same map through the other code path; pads, never attended, aside)."""
    V = basis(3, 2)
    f = ablation_fn(V, 1.0)
    for site in ("input", "output"):
        with ablate_subspace(model, V, [1], site=site, lam=1.0):
            a = generate(model, tok, PROMPTS, max_new_tokens=5, batch_size=2)
            sa = score(model, tok, PROMPTS, candidates=[[5, 9]] * len(PROMPTS))
        b = generate(model, tok, PROMPTS, max_new_tokens=5, batch_size=2, layer_module=1, site=site,
                     edits=[f] * len(PROMPTS), positions="all", patch_special=True)
        sb = score(model, tok, PROMPTS, candidates=[[5, 9]] * len(PROMPTS), layer_module=1, site=site,
                   edits=[f] * len(PROMPTS), patch_special=True)
        assert [r["token_ids"] for r in a] == [r["token_ids"] for r in b]
        np.testing.assert_allclose(sa["lp_candidates"], sb["lp_candidates"], atol=1e-5)
        plain = score(model, tok, PROMPTS, candidates=[[5, 9]] * len(PROMPTS))
        assert not np.allclose(plain["lp_candidates"], sa["lp_candidates"], atol=1e-3)


def test_last_layer_output_hand_computation(model, tok):
    """Ablating the output of the last layer: logits = lm_head(norm(h_L - lam h_L P)), by hand."""
    from zhunt.models.hooks import capture

    V, lam = basis(5, 3), 1.0
    L = len(model.model.layers) - 1
    cands = [list(range(64))] * len(PROMPTS)
    with ablate_subspace(model, V, [L], site="output", lam=lam):
        got = score(model, tok, PROMPTS, candidates=cands)["lp_candidates"]
    for i, p in enumerate(PROMPTS):
        enc = tok([p], return_tensors="pt")
        with torch.no_grad(), capture(model.model.layers, [L]) as cap:
            model(**enc)
            h = cap[L][0][0, -1].numpy()
            h = h - lam * h @ V.T @ V
            logits = model.lm_head(model.model.norm(torch.from_numpy(h)))
        np.testing.assert_allclose(got[i], torch.log_softmax(logits, -1).numpy(), atol=1e-5)


def test_lambda_zero_and_bad_arguments(model, tok):
    V = basis(3, 4)
    plain = generate(model, tok, PROMPTS, max_new_tokens=4)
    with ablate_subspace(model, V, [0, 1, 2], site="input", lam=0.0):
        same = generate(model, tok, PROMPTS, max_new_tokens=4)
    assert [r["token_ids"] for r in same] == [r["token_ids"] for r in plain]
    with pytest.raises(ValueError):
        with ablate_subspace(model, V, [3], site="input"):
            pass
    with pytest.raises(ValueError):
        with ablate_subspace(model, V, [0, 0], site="input"):
            pass
    with pytest.raises(ValueError):
        with ablate_subspace(model, V[:, :10], [0], site="input"):
            pass
    with pytest.raises(KeyError):
        with ablate_subspace(model, {0: V}, [0, 1], site="input"):
            pass
    with pytest.raises(ValueError):
        with ablate_subspace(model, V, [0], site="middle"):
            pass
    # hooks are gone afterwards
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.model.layers)


def test_ms_basis_file_round_trip(model, tok, tmp_path):
    from zhunt.data.extraction import extract_to_store
    from zhunt.models.site import hidden_index
    from zhunt.data.store import ActivationStore
    from zhunt.activations.zspace import language_means, language_subspace

    texts = {"en": ["what is 2 plus 3?", "abc", "q: 7 times 8?", "hello there"],
             "zh": ["zz 2 jia 3", "xyz", "7 cheng 8 ?", "ni hao"],
             "fr": ["deux plus trois", "abd", "sept fois huit", "bonjour"]}
    df = pd.DataFrame([{"id": f"p{i}", "lang": lang, "text": t} for lang, ts in texts.items()
                       for i, t in enumerate(ts)])
    store = tmp_path / "s.h5"
    extract_to_store(model, tok, model.model.layers, df, store, batch_size=4)
    out = tmp_path / "ms_basis.h5"
    rows = write_ms_basis(out, store, "tiny", [0, 2])
    assert len(rows) == 2 * 2 * 2 and {r["k"] for r in rows} == {2}
    every = write_ms_basis(tmp_path / "all.h5", store, "tiny")  # default: every layer, both sites
    assert sorted({(r["site"], r["layer"]) for r in every}) == [(s, l) for s in ("input", "output") for l in range(3)]
    import h5py

    with ActivationStore(store) as st:
        for site in ("input", "output"):
            for l in (0, 2):
                for pooling in ("last", "mean"):
                    j = hidden_index(l, site)
                    ref = language_subspace(language_means(st, j, pooling)[0])["M_s"]
                    got = read_ms_basis(out, l, site, pooling)
                    np.testing.assert_allclose(got, ref, atol=1e-12)
                    np.testing.assert_allclose(got @ got.T, np.eye(2), atol=1e-10)
                    with h5py.File(out) as f:
                        a = dict(f[f"{site}/L{l}/{pooling}"].attrs)
                    assert (a["model"], a["layer"], a["site"], a["hidden_index"], a["k"], a["pooling"]) == \
                        ("tiny", l, site, j, 2, pooling)
    with pytest.raises(ZhuntError, match="no basis input/L1/mean"):
        read_ms_basis(out, 1, "input")
    with pytest.raises(ZhuntError, match="not a readable"):
        read_ms_basis(tmp_path / "missing.h5", 0, "input")
    with pytest.raises(ZhuntError, match="not an M_s basis"):
        read_ms_basis(store, 0, "input")
