"""Weight-structure analyses against brute force on tiny random weights, plus planted structure.

Brute force means the literal definitions: explicit d x d kernels A_h and numpy's
SVD of them (or of the explicitly stacked matrices), explicit d x d projectors.
Tolerances: quantities computed in float64 from the same inputs agree to
rtol 1e-8 (singular values, effective ranks, alignments; absolute 1e-10 where a
value may be 0); subspaces are compared by Grassmann similarity > 1 - 1e-9.
"""

import json
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose

from zhunt.weights.masks import head_factors, head_kernel_spectra, kernel_gram, top_right_singular, z_masks
from zhunt.weights.structure import (MATRIX_NAMES, across_layers, adjacent_similarity, analyze_model, depth_trend,
                                     energy_fraction, grassmann_matrix, grassmann_per_head, layer_structure,
                                     predict_bottleneck, segment_phases, singular_values)
from zhunt.stages.weights import run_structure
from zhunt.subspace import effective_rank, grassmann_similarity, random_subspace

RTOL = 1e-8
SUB = 1 - 1e-9


def fake_layer(H=4, H_kv=2, d_head=8, d=24, d_ff=40, qk_norm=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return SimpleNamespace(
        W_Q=r(H, d_head, d), W_K=r(H_kv, d_head, d), W_V=r(H_kv, d_head, d), W_O=r(H, d, d_head),
        kv_head=torch.arange(H) // (H // H_kv),
        attn_norm=1.0 + 0.3 * r(d),
        q_norm=(1.0 + 0.2 * r(d_head)) if qk_norm else None,
        k_norm=(1.0 + 0.2 * r(d_head)) if qk_norm else None,
        gate=r(d_ff, d), up=r(d_ff, d), down=r(d, d_ff), mlp_norm=1.0 + 0.3 * r(d),
    )


def explicit_kernels(w):
    """A_h (d, d) the literal way, norms folded: (diag(qn) W_Q^h diag(g))^T (diag(kn) W_K^kv(h) diag(g))."""
    G = np.diag(w.attn_norm.numpy())
    out = []
    for h in range(w.W_Q.shape[0]):
        q, k = w.W_Q[h].numpy(), w.W_K[int(w.kv_head[h])].numpy()
        if w.q_norm is not None:
            q, k = np.diag(w.q_norm.numpy()) @ q, np.diag(w.k_norm.numpy()) @ k
        out.append((q @ G).T @ (k @ G))
    return out


def svd_top(M, k):
    _, s, Vt = np.linalg.svd(M)
    return s, Vt[:k]


# -- per-layer metrics vs brute force ------------------------------------------------------------

@pytest.mark.parametrize("shape", [(50, 12), (12, 50), (16, 16)])
def test_singular_values_match_svd(shape):
    W = np.random.default_rng(0).standard_normal(shape)
    s = np.linalg.svd(W, compute_uv=False)
    assert_allclose(singular_values(W), s, rtol=RTOL, atol=1e-10 * s[0])
    assert_allclose(singular_values(torch.tensor(W)), s, rtol=RTOL, atol=1e-10 * s[0])


@pytest.mark.parametrize("qk_norm", [False, True])
def test_head_kernels_brute_force(qk_norm):
    w = fake_layer(qk_norm=qk_norm)
    A = explicit_kernels(w)
    Q, K, kv = head_factors(w)
    sigma, V = head_kernel_spectra(Q, K, kv, k=5)
    assert sigma.shape == (4, 8) and V.shape == (4, 5, 24)
    for h, Ah in enumerate(A):
        s_ref, V_ref = svd_top(Ah, 5)  # explicit d x d SVD
        assert_allclose(sigma[h], s_ref[:8], rtol=RTOL, atol=1e-10 * s_ref[0])
        assert_allclose(effective_rank(sigma[h]), effective_rank(s_ref), rtol=RTOL)
        assert_allclose(V[h] @ V[h].T, np.eye(5), atol=1e-10)
        assert grassmann_similarity(V[h], V_ref) > SUB
        # the head-alone route through the d x d Gram gives the same subspace
        V_gram, _ = top_right_singular(kernel_gram(Q, K, [h]), 5)
        assert grassmann_similarity(V[h], V_gram) > SUB
    # the head-0 Z-mask is this algorithm for h = 0 (one algorithm, bit for bit), its other singular values 0
    m = z_masks(w, ks=[5], kinds=["head0"])["head0"]
    assert np.array_equal(m["V"][5], V[0])
    assert np.array_equal(m["sigma"][:8], sigma[0]) and not m["sigma"][8:].any()


def test_head_subspace_k_above_head_dim():
    Q, K, kv = head_factors(fake_layer())
    with pytest.raises(ValueError, match="d_head"):
        head_kernel_spectra(Q, K, kv, k=9)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_layer_structure_brute_force(qk_norm):
    w = fake_layer(qk_norm=qk_norm, seed=1)
    k, d = 5, 24
    ls = layer_structure(w, k=k)
    A = explicit_kernels(w)
    # per-head and stacked kernel effective ranks
    ref = [effective_rank(np.linalg.svd(Ah, compute_uv=False)) for Ah in A]
    assert_allclose(ls.attn_eff_rank, ref, rtol=RTOL)
    s_st, V_st = svd_top(np.concatenate(A, axis=0), k)
    assert_allclose(ls.attn_stacked_eff_rank, effective_rank(s_st), rtol=1e-6)
    assert grassmann_similarity(ls.V_attn, V_st) > SUB
    # full per-layer matrices, stacked literally
    stacked = {
        "W_Q": np.concatenate(list(w.W_Q.numpy()), axis=0),
        "W_K": np.concatenate(list(w.W_K.numpy()), axis=0),
        "W_V": np.concatenate(list(w.W_V.numpy()), axis=0),
        "W_O": np.concatenate(list(w.W_O.numpy()), axis=1),
        "gate": w.gate.numpy(), "up": w.up.numpy(), "down": w.down.numpy(),
    }
    for name in MATRIX_NAMES:
        assert_allclose(ls.matrix_eff_rank[name], effective_rank(np.linalg.svd(stacked[name], compute_uv=False)),
                        rtol=RTOL, err_msg=name)
    assert_allclose(ls.wv_norm, np.sqrt((w.W_V.numpy() ** 2).sum()), rtol=RTOL)
    # FFN alignment with explicit projectors; gate with its input norm folded in
    _, V_gate = svd_top(w.gate.numpy() * w.mlp_norm.numpy()[None, :], k)
    assert grassmann_similarity(ls.V_gate, V_gate) > SUB
    P = V_st.T @ V_st
    assert_allclose(ls.ffn_alignment, np.linalg.norm(P @ V_gate.T) ** 2 / np.linalg.norm(V_gate) ** 2, rtol=1e-7)
    per_head = []
    for Ah in A:
        _, Vh = svd_top(Ah, k)
        per_head.append(np.linalg.norm(Vh.T @ Vh @ V_gate.T) ** 2 / k)
    assert_allclose(ls.ffn_alignment_heads, per_head, rtol=1e-7)
    # unfolded gate
    ls_raw = layer_structure(w, k=k, fold_mlp_norm=False)
    _, V_raw = svd_top(w.gate.numpy(), k)
    assert grassmann_similarity(ls_raw.V_gate, V_raw) > SUB
    assert_allclose(ls.ffn_alignment_raw_gate, np.linalg.norm(P @ V_raw.T) ** 2 / k, rtol=1e-7)
    assert_allclose(ls_raw.ffn_alignment, ls.ffn_alignment_raw_gate, rtol=1e-9)


def test_energy_fraction_chance():
    d, k = 200, 10
    V = random_subspace(k, d, random_state=0)
    fr = [energy_fraction(random_subspace(k, d, random_state=s), V) for s in range(1, 200)]
    assert abs(np.mean(fr) - k / d) < 0.1 * k / d


def test_planted_ffn_inside_and_orthogonal():
    d, k = 24, 5
    w = fake_layer(seed=2)
    w.mlp_norm = None
    V = layer_structure(w, k=k).V_attn
    rng = np.random.default_rng(0)
    # gate whose row space is exactly the attention subspace -> alignment 1, ratio d/k
    w.gate = torch.tensor(rng.standard_normal((40, k)) @ V)
    ls = layer_structure(w, k=k)
    assert_allclose(ls.ffn_alignment, 1.0, rtol=1e-9)
    assert_allclose(ls.ffn_alignment / (k / d), d / k, rtol=1e-9)
    # gate inside the orthogonal complement -> alignment 0
    _, _, Vt = np.linalg.svd(V, full_matrices=True)
    perp = Vt[k:2 * k]  # orthonormal rows orthogonal to span(V)
    w.gate = torch.tensor(rng.standard_normal((40, k)) @ perp)
    ls = layer_structure(w, k=k)
    assert_allclose(ls.ffn_alignment, 0.0, atol=1e-10)


# -- across layers ----------------------------------------------------------------------------------

def test_grassmann_matrices_brute_force():
    layers = [fake_layer(seed=s) for s in range(4)]
    k = 4
    res = [layer_structure(w, k=k) for w in layers]
    V = np.stack([r.V_attn for r in res])
    Vh = np.stack([r.V_heads for r in res])
    S, Sh = grassmann_matrix(V), grassmann_per_head(Vh)
    assert S.shape == (4, 4) and Sh.shape == (4, 4, 4)
    Vref = [svd_top(np.concatenate(explicit_kernels(w), axis=0), k)[1] for w in layers]
    Vhref = [[svd_top(A, k)[1] for A in explicit_kernels(w)] for w in layers]
    for a in range(4):
        for b in range(4):
            Pa, Pb = Vref[a].T @ Vref[a], Vref[b].T @ Vref[b]
            assert_allclose(S[a, b], np.trace(Pa @ Pb) / k, rtol=1e-7, atol=1e-10)
            for h in range(4):
                Pa, Pb = Vhref[a][h].T @ Vhref[a][h], Vhref[b][h].T @ Vhref[b][h]
                assert_allclose(Sh[a, b, h], np.trace(Pa @ Pb) / k, rtol=1e-7, atol=1e-10)
    adj = adjacent_similarity(S)
    assert_allclose(adj["sim"], [S[0, 1], S[1, 2], S[2, 3]])
    assert np.isnan(adj["drop"][0]) and np.isnan(adj["rise"][-1])
    assert_allclose(adj["drop"][1:], [S[0, 1] - S[1, 2], S[1, 2] - S[2, 3]])


def test_depth_trend():
    rho, p = depth_trend(np.arange(10.0) ** 2)
    assert rho == pytest.approx(1.0) and p < 1e-6
    rho, _ = depth_trend(-np.arange(10.0))
    assert rho == pytest.approx(-1.0)
    assert np.isnan(depth_trend(np.ones(5))[0])


def test_phases_seed_shape():
    """The seed's Qwen2.5-3B curve: low 0|1, plateau, 0.482 at 32|33, 0.030 at 33|34 -> 1-33-2."""
    s = np.full(35, 0.25)
    s[0], s[32], s[33], s[34] = 0.05, 0.482, 0.030, 0.20
    ph = segment_phases(s)
    assert ph.pattern == "1-33-2"
    assert ph.encode_last == 0 and ph.decode_first == 34
    assert ph.decode_drop == pytest.approx(0.452)
    assert ph.encode_rise == pytest.approx(0.20)
    assert segment_phases(np.array([0.1, 0.9])).pattern == "1-1-1"
    with pytest.raises(ValueError):
        segment_phases(np.array([0.5]))


def test_predict_bottleneck_rule():
    rng = np.random.default_rng(0)
    L, H = 8, 16
    A = 60 + rng.standard_normal((L, H))
    A[3] += 20.0  # clearly not
    A[5] -= 30.0  # clear minimum
    s = np.full(L - 1, 0.3)
    ph = segment_phases(s)  # flat curve: 1-6-1 (gap ties go to the earliest / sharpest)
    out = predict_bottleneck(A, s, ph)
    assert out["predicted_layer"] == 5 and out["tied_layers"] == [5]
    # two layers tied within one standard error: the sharper following drop wins
    A[2] = A[5] + 0.05
    s2 = s.copy()
    s2[2] = 0.05  # drop_2 = s[1] - s[2] = 0.25 > drop_5 = 0
    out = predict_bottleneck(A, s2, candidates=range(1, 7))
    assert sorted(out["tied_layers"]) == [2, 5]
    assert out["predicted_layer"] == 2 and out["confirmed_by_drop"]
    assert out["following_drop"] == pytest.approx(0.25)


# -- tiny real models -------------------------------------------------------------------------------

D, H, HKV, DH, DFF, LAYERS = 64, 4, 2, 16, 128, 6


def _tiny_qwen2(seed=0, layers=LAYERS):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=300, hidden_size=D, intermediate_size=DFF, num_hidden_layers=layers,
                      num_attention_heads=H, num_key_value_heads=HKV, head_dim=DH, max_position_embeddings=64)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).eval()


def test_identical_layers_similarity_one():
    model = _tiny_qwen2(layers=4)
    ref = model.model.layers[0].state_dict()
    for layer in model.model.layers[1:]:
        layer.load_state_dict(ref)
    res = analyze_model(model, k=4)
    x = across_layers(res)
    assert_allclose(x["S"], np.ones((4, 4)), atol=1e-9)
    assert_allclose(x["S_heads"], np.ones((4, 4, H)), atol=1e-9)
    assert_allclose(x["adjacent"]["drop"][1:], 0.0, atol=1e-9)
    assert_allclose(res.attn_eff_rank, np.broadcast_to(res.attn_eff_rank[0], res.attn_eff_rank.shape), rtol=1e-9)


def test_planted_low_rank_layer_is_bottleneck():
    model = _tiny_qwen2(seed=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # layer 2: every head's W_Q^h rank 1 -> kernels A_h of rank 1
        q = model.model.layers[2].self_attn.q_proj.weight
        u, v = torch.randn(H, DH, 1, generator=g), torch.randn(H, 1, D, generator=g)
        q.copy_((0.1 * u @ v).reshape(H * DH, D))
    res = analyze_model(model, k=4)
    assert_allclose(res.attn_eff_rank[2], 1.0, atol=1e-4)  # float32 weights: rank 1 up to rounding
    assert res.attn_eff_rank[[0, 1, 3, 4, 5]].min() > 5
    x = across_layers(res)
    assert 2 in x["phases"].layers("compute")
    assert x["bottleneck"]["predicted_layer"] == 2




EXPECTED_FILES = {
    "effective_rank_heads.tsv", "effective_rank.tsv", "effective_rank.md", "effective_rank_summary.tsv",
    "effective_rank_summary.md", "grassmann.h5", "grassmann_adjacent.tsv", "grassmann_adjacent.md",
    "ffn_alignment.tsv", "ffn_alignment.md", "phases.tsv", "phases.md", "bottleneck.tsv",
    "layer_scores.tsv", "layer_scores.md",
}
EXPECTED_FIGURES = {f"{n}.{e}" for n in ("effective_rank", "grassmann_heatmap", "ffn_alignment", "phases")
                    for e in ("pdf", "png")}


def test_run_structure_tiny_qwen2(tmp_path, make_bpe_tokenizer):
    folder = tmp_path / "tiny-qwen2"
    _tiny_qwen2(seed=2).save_pretrained(folder)
    corpus = ["Q: What is 23 plus 14? A: thirty-seven"] * 5
    make_bpe_tokenizer(corpus, eos="<|endoftext|>").save_pretrained(folder)
    (folder / "zhunt_model.json").write_text(json.dumps({"name": "tiny", "dtype": "float32"}))
    out, figs = tmp_path / "structure", tmp_path / "figures"
    k = 4
    table = lambda n: [str(out / f"{n}.tsv"), str(out / f"{n}.md")]  # noqa: E731
    figure = lambda n: [str(figs / f"{n}.pdf"), str(figs / f"{n}.png")]  # noqa: E731
    outputs = {"heads": str(out / "effective_rank_heads.tsv"), "erank": table("effective_rank"),
               "summary": table("effective_rank_summary"), "grassmann": str(out / "grassmann.h5"),
               "adjacent": table("grassmann_adjacent"), "ffn": table("ffn_alignment"), "phases": table("phases"),
               "bottleneck": str(out / "bottleneck.tsv"), "layer_scores": table("layer_scores"),
               "fig_erank": figure("effective_rank"), "fig_grassmann": figure("grassmann_heatmap"),
               "fig_ffn": figure("ffn_alignment"), "fig_phases": figure("phases")}
    run_structure({"model": str(folder)}, {"k": k}, outputs, wildcards={"model": "tiny"})

    assert {p.name for p in out.iterdir()} == EXPECTED_FILES  # exactly the rule's outputs, no temp files
    assert {p.name for p in figs.iterdir()} == EXPECTED_FIGURES
    assert all(p.stat().st_size > 0 for p in figs.iterdir())

    read = lambda name: pd.read_csv(out / name, sep="\t")  # noqa: E731
    heads = read("effective_rank_heads.tsv")
    assert list(heads.columns) == ["layer", "head", "attn_eff_rank"] and len(heads) == LAYERS * H
    per = read("effective_rank.tsv")
    assert len(per) == LAYERS
    assert {"attn_mean", "attn_std", "attn_cv", *MATRIX_NAMES, "W_V_norm"} <= set(per.columns)
    assert (per["attn_min"] <= per["attn_mean"]).all() and (per["attn_mean"] <= per["attn_max"]).all()
    summ = read("effective_rank_summary.tsv")
    assert list(summ.columns[:4]) == ["statistic", "value", "p_value", "seed_value"]
    stats = set(summ["statistic"])
    assert {"spearman_attn_vs_depth", "spearman_ffn_vs_depth", "wv_eff_rank_mean", "wv_eff_rank_cv",
            "wv_norm_cv", "min_attn_rank_layer"} <= stats
    assert summ.set_index("statistic").loc["spearman_attn_vs_depth", "p_value"] >= 0
    with h5py.File(out / "grassmann.h5") as f:
        assert f["multihead"].shape == (LAYERS, LAYERS)
        assert f["per_head"].shape == (LAYERS, LAYERS, H)
        assert f.attrs["k"] == k
        assert_allclose(np.diag(f["multihead"][()]), 1.0, atol=1e-9)
    adj = read("grassmann_adjacent.tsv")
    assert list(adj.columns[:4]) == ["layer", "next", "sim", "drop"] and len(adj) == LAYERS - 1
    ffn = read("ffn_alignment.tsv")
    assert list(ffn.columns[:5]) == ["layer", "alignment", "chance", "ratio", "std_across_heads"]
    assert len(ffn) == LAYERS and np.allclose(ffn["chance"], k / D)
    ph = read("phases.tsv")
    assert len(ph) == LAYERS and set(ph["phase"]) == {"encode", "compute", "decode"}
    b = read("bottleneck.tsv")
    assert len(b) == 1 and b["model"][0] == "tiny"
    assert sum(map(int, b["phases"][0].split("-"))) == LAYERS
    assert ph.set_index("layer").loc[int(b["predicted_layer"][0]), "phase"] == "compute"
    # the per-layer score table repeats the stage's own numbers, nothing recomputed (TSVs hold 6 digits)
    sc = read("layer_scores.tsv")
    assert len(sc) == LAYERS and int(sc.loc[sc["predicted"], "layer"].iloc[0]) == int(b["predicted_layer"][0])
    assert_allclose(sc["attn_eff_rank_mean"], per["attn_mean"], rtol=1e-5)
    assert_allclose(sc["attn_eff_rank_cv"], per["attn_cv"], rtol=1e-5)
    assert_allclose(sc["attn_eff_rank_sem"], per["attn_std"] / np.sqrt(H), rtol=1e-5)
    assert_allclose(sc["ffn_ratio"], ffn["ratio"], rtol=1e-5)
    assert_allclose(sc["sim_next"][:-1], adj["sim"], rtol=1e-5)
    assert_allclose(sc["sim_prev"][1:], adj["sim"], rtol=1e-5)
    assert np.isnan(sc["sim_next"].iloc[-1]) and np.isnan(sc["sim_prev"].iloc[0])
    assert_allclose(sc["drop_after"][1:-1], adj["drop"][1:], rtol=1e-5, atol=1e-6)
    assert list(sc["phase"]) == list(ph["phase"]) and list(sc["candidate"]) == list(ph["candidate"])
