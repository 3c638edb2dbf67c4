"""QK operators (seed 004): gram and eigenvalues against explicit d x d matrices, exports, end to end."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose

from zhunt.calibration.generators import qk_random_layers as _random_factors
from zhunt.calibration.generators import qk_shared_layers
from zhunt.weights.qk import (analyse_qk, eigenspace_alignment, load_qk_exports, operator_cos, operator_gram,
                      qk_factors, qk_verdict, random_pa_baseline, sign_agreement, sym_eig,
                      VERDICT_BANDS, write_qk_exports)




@pytest.fixture(scope="module")
def tiny_qwen2(make_tiny_qwen2_folder):
    """A random-init 6-layer Qwen2 (GQA 4/2, d_head 8, d 32) saved as a prepared zhunt folder."""
    return make_tiny_qwen2_folder(6, seed=1)


def _explicit_g(fac, h):
    Q, K, kv = fac
    return Q[h].T @ K[kv[h]]  # (d, d), the literal operator


# -- gram and cosines --------------------------------------------------------------------------------
def test_gram_matches_explicit_operators():
    facs = _random_factors()
    Q = np.stack([f[0] for f in facs])
    K = np.stack([f[1] for f in facs])
    gram = operator_gram(Q, K, facs[0][2])
    nL, H = len(facs), Q.shape[1]
    ref = np.array([[[np.sum(_explicit_g(facs[a], h) * _explicit_g(facs[b], h)) for h in range(H)]
                     for b in range(nL)] for a in range(nL)])
    assert_allclose(gram, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
    cos, cos_h = operator_cos(gram)
    assert_allclose(np.diag(cos), 1.0, atol=1e-12)
    g0, g1 = _explicit_g(facs[0], 2), _explicit_g(facs[1], 2)
    assert cos_h[0, 1, 2] == pytest.approx(np.sum(g0 * g1) / np.linalg.norm(g0) / np.linalg.norm(g1))


@pytest.mark.parametrize("dh,d", [(5, 16), (6, 9)])  # 2 d_head < d, and 2 d_head > d
def test_sym_eig_matches_explicit_matrix(dh, d):
    rng = np.random.default_rng(4)
    Q, K = rng.standard_normal((dh, d)), rng.standard_normal((dh, d))
    S = (Q.T @ K + K.T @ Q) / 2
    ref = np.linalg.eigvalsh(S)
    ref = ref[np.argsort(-np.abs(ref))][: 2 * dh]
    m = min(2 * dh, d)
    vals, vecs = sym_eig(Q, K)
    assert vals.shape == (2 * dh,) and vecs.shape == (m, d)
    assert_allclose(vals[:m], ref[:m], rtol=1e-8, atol=1e-10 * np.abs(ref).max())
    assert_allclose(vals[m:], 0.0)
    assert_allclose(vecs @ vecs.T, np.eye(m), atol=1e-10)
    assert_allclose(S @ vecs.T, vecs.T * vals[:m], atol=1e-9 * np.abs(ref).max())
    # the small problem has the spectrum of C B B^T, as the factorisation says
    B = np.concatenate([Q, K])
    C = np.block([[np.zeros((dh, dh)), np.eye(dh)], [np.eye(dh), np.zeros((dh, dh))]]) / 2
    small = np.linalg.eigvals(C @ B @ B.T).real
    small = small[np.argsort(-np.abs(small))]
    assert_allclose(small[:m], ref[:m], rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    _, top3 = sym_eig(Q, K, topk=3)
    assert_allclose(top3, vecs[:3])


def test_identical_layers_are_perfectly_aligned():
    fac = _random_factors(n_layers=1, seed=5)[0]
    res = analyse_qk([fac, fac, fac], anchor=-1, topk=6)
    assert_allclose(res["cos"], 1.0, atol=1e-12)
    assert_allclose(res["cos_to_anchor"], 1.0, atol=1e-12)
    assert_allclose(res["T_opt"], 1.0, atol=1e-12)
    assert_allclose(res["residual"], 0.0, atol=1e-5)
    for agree in res["sign"].values():
        assert_allclose(agree, 1.0)
    assert set(res["sign"]) == {2, 4, 8}  # 2 d_head = 10 caps the k list
    assert_allclose(res["alignment"]["mean_cos"], 1.0, atol=1e-8)
    assert_allclose(res["alignment"]["min_cos"], 1.0, atol=1e-6)
    assert_allclose(res["alignment"]["top1"], 1.0, atol=1e-10)
    assert res["verdict"] == "STRONG" and res["anchor"] == 2


def test_scaled_layer_gives_T_and_flipped_signs():
    Q, K, kv = _random_factors(n_layers=1, seed=6)[0]
    res = analyse_qk([(Q, K, kv), (-2.5 * Q, K, kv)], anchor=1)
    assert_allclose(res["cos"][0, 1], -1.0, atol=1e-12)
    assert_allclose(res["T_opt"][0], -0.4, atol=1e-12)  # g_0 = -0.4 g_1
    assert_allclose(res["sign"][2][0], 0.0)  # every sign flipped
    assert_allclose(res["alignment"]["mean_cos"][0], 1.0, atol=1e-8)  # same eigenspaces
    assert res["verdict"] == "REJECTED"  # mean of -1 and 1


def test_independent_layers_and_helpers():
    res = analyse_qk(_random_factors(n_layers=5, seed=7, d=40), anchor=0)
    off = res["cos"][~np.eye(5, dtype=bool)]
    assert np.abs(off).max() < 0.5
    assert_allclose(res["frac_positive"], 0.5)  # Sylvester inertia: d_head of each sign when 2 d_head <= d
    s = sign_agreement(res["sym_eigs"], anchor=0, ks=[2, 4, 1000])
    assert set(s) == {2, 4} and s[2].shape == (5, 4)
    al = eigenspace_alignment(res["eig_dirs"], anchor=0)
    assert al["mean_cos"].shape == (5, 4) and np.all(al["mean_cos"][1:] < 0.99)
    with pytest.raises(Exception):
        analyse_qk(_random_factors(n_layers=2), anchor=5)


def test_random_pa_baseline():
    assert random_pa_baseline(4, 4, draws=3) == pytest.approx(1.0)
    low = random_pa_baseline(2, 200, draws=5)
    assert 0 < low < 0.2 and low == random_pa_baseline(2, 200, draws=5)


def test_verdict_bands():
    assert [qk_verdict(x)[0] for x in (0.95, 0.9, 0.6, 0.5, 0.2, 0.1, -0.3)] == \
        ["STRONG", "MEDIUM", "MEDIUM", "WEAK", "WEAK", "REJECTED", "REJECTED"]
    assert qk_verdict(float("nan"))[0] == "untestable"
    assert analyse_qk(_random_factors(n_layers=1))["verdict"] == "untestable"


# -- calibration: null layers -> REJECTED, planted shared operator -> the positive label ------------------
N_SEEDS = 40


def test_verdict_null_independent_layers_rejected():
    """Six independent random layers: REJECTED in >= 95% of seeds once the anchor's self-term is left out.

    With the self-cosine of 1 averaged in (the seed as written) the same layers read about 1/6 = 0.17: WEAK.
    """
    labels, incl = [], []
    for seed in range(N_SEEDS):
        res = analyse_qk(_random_factors(n_layers=6, H=4, H_kv=2, dh=8, d=32, seed=100 + seed), topk=4)
        labels.append(res["verdict"])
        incl.append(qk_verdict(res["mean_cos_to_anchor"])[0])
        assert res["mean_cos_to_anchor"] == pytest.approx((1 + 5 * res["mean_cos_to_anchor_excl"]) / 6)
    assert np.mean([lab == "REJECTED" for lab in labels]) >= 0.95
    assert np.mean([lab == "WEAK" for lab in incl]) >= 0.95  # the bias the exclusion removes


@pytest.mark.parametrize("noise, expected", [(0.05, "STRONG"), (0.5, "MEDIUM")])
def test_verdict_planted_shared_operator(noise, expected):
    """Every layer = a positive multiple of one shared operator plus independent noise of relative size ``noise``.

    Expected cosine to the anchor ~ 1 / (1 + noise^2)^2 (independent isotropic noise on both Q and K), so
    the band follows from ``noise``: 0.05 -> 0.995 (STRONG), 0.5 -> 0.64 (MEDIUM).
    """
    hits = sum(analyse_qk(qk_shared_layers(seed, noise), topk=4)["verdict"] == expected for seed in range(N_SEEDS))
    assert hits / N_SEEDS >= 0.95


def test_norm_folded_factors_match_masks_kernel():
    from zhunt.weights.masks import head_factors

    g = torch.Generator().manual_seed(0)
    w = SimpleNamespace(W_Q=torch.randn(4, 6, 12, generator=g), W_K=torch.randn(2, 6, 12, generator=g),
                        attn_norm=1 + 0.3 * torch.randn(12, generator=g), kv_head=torch.tensor([0, 0, 1, 1]),
                        q_norm=1 + 0.2 * torch.randn(6, generator=g), k_norm=1 + 0.2 * torch.randn(6, generator=g))
    Q, K, kv = qk_factors(w, "norm_folded")
    Qm, Km, _ = head_factors(w)
    for h in range(4):
        assert_allclose(Q[h].T @ K[kv[h]], Qm[h].T @ Km[h], atol=1e-12)
    Qr, Kr, _ = qk_factors(w, "raw")
    assert_allclose(Qr, w.W_Q.double().numpy()) and Kr.shape == (2, 6, 12)
    with pytest.raises(ValueError):
        qk_factors(w, "folded")


# -- exports ----------------------------------------------------------------------------------------------
def test_exports_roundtrip_and_seed_reading(tmp_path):
    res = analyse_qk(_random_factors(n_layers=3, seed=8), topk=4)
    json_path, pt_path = write_qk_exports(res, tmp_path / "toy-grams.json", tmp_path / "toy-grams-eigdirs.pt", "toy")
    assert json_path == tmp_path / "toy-grams.json" and pt_path == tmp_path / "toy-grams-eigdirs.pt"
    d = json.loads(json_path.read_text())
    assert {"num_layers", "num_heads", "head_dim", "hidden_size", "gram", "eigdirs_path"} <= set(d)
    gram = np.array(d["gram"])
    assert gram.shape == (3, 3, 4)
    pt = torch.load(d["eigdirs_path"], weights_only=True)
    assert pt["eig_dirs"].dtype == torch.float32 and tuple(pt["eig_dirs"].shape) == (3, 4, 4, 16)
    assert tuple(pt["sym_eigs"].shape) == (3, 4, 2 * d["head_dim"])
    # the seed's reading: normalise by the gram diagonal, average over heads
    diag = np.sqrt(np.array([[gram[L, L, h] for h in range(4)] for L in range(3)]))
    cos = np.array([[(gram[a, b] / (diag[a] * diag[b])).mean() for b in range(3)] for a in range(3)])
    assert_allclose(cos, res["cos"], atol=1e-12)
    meta, tensors = load_qk_exports(json_path)
    assert_allclose(tensors["sym_eigs"], res["sym_eigs"], rtol=1e-6, atol=1e-6 * np.abs(res["sym_eigs"]).max())


# -- end to end --------------------------------------------------------------------------------------------
def test_run_qk_tiny(tiny_qwen2, tmp_path):
    folder, _ = tiny_qwen2
    from zhunt.stages.weights import run_qk_operators

    out, figs = tmp_path / "structure", tmp_path / "figures"
    names = {"cos": "qk_operator_cos.tsv", "anchor": "qk_anchor.tsv", "anchor_md": "qk_anchor.md",
             "signs": "qk_sign_agreement.tsv", "signs_md": "qk_sign_agreement.md", "verdict": "qk_verdict.md",
             "verdict_tsv": "qk_verdict.tsv", "grams": "tiny-grams.json", "eigdirs": "tiny-grams-eigdirs.pt"}
    outputs = {key: str(out / name) for key, name in names.items()}
    outputs["fig"] = [str(figs / "qk_cos_heatmap.pdf"), str(figs / "qk_cos_heatmap.png")]
    run_qk_operators({"model": str(folder)}, {"anchor": -1, "factors": "raw"}, outputs, wildcards={"model": "tiny"})
    assert {p.name for p in out.iterdir()} == set(names.values())  # exactly the rule's outputs
    assert {p.name for p in figs.iterdir()} == {"qk_cos_heatmap.pdf", "qk_cos_heatmap.png"}
    vt = pd.read_csv(out / "qk_verdict.tsv", sep="\t")
    res = {"anchor": int(vt.loc[0, "anchor"]), "verdict": vt.loc[0, "verdict"],
           "mean_cos_to_anchor_excl": float(vt.loc[0, "mean_cos_to_anchor_excl"])}
    meta, tensors = load_qk_exports(out / "tiny-grams.json")
    assert meta["eigdirs_path"] == outputs["eigdirs"] and meta["head_dim"] == 8
    long = pd.read_csv(out / "qk_operator_cos.tsv", sep="\t")
    assert list(long.columns) == ["L", "L2", "cos"] and len(long) == 36
    anchor = pd.read_csv(out / "qk_anchor.tsv", sep="\t")
    assert anchor.loc[5, "cos_to_anchor"] == pytest.approx(1.0, abs=1e-5)
    sign = pd.read_csv(out / "qk_sign_agreement.tsv", sep="\t")
    assert list(sign["k"]) == [2, 4, 8, 16] and list(sign.columns) == ["k", "mean_agree", "early", "mid", "late"]
    assert res["anchor"] == 5 and tensors["eig_dirs"].shape[2] == 16
    pt = torch.load(out / "tiny-grams-eigdirs.pt", weights_only=True)
    assert tuple(pt["eig_dirs"].shape) == (6, 4, 16, 32)
    assert res["verdict"] == "REJECTED"  # six random-init layers: the null case
    assert res["verdict"] in (out / "qk_verdict.md").read_text()
    assert vt.loc[0, "verdict"] == "REJECTED" and "REJECTED" in vt.loc[0, "criteria"]
    assert all(f"> {lo:g}" in vt.loc[0, "criteria"] for lo, _, _ in VERDICT_BANDS[:-1])
