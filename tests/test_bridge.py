"""Tests for zhunt.experiments.bridge (Exp. D): estimators, LOO from sufficient statistics, nulls, OT token pairs."""

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import orthogonal_procrustes

from zhunt.experiments.bridge import (ESTIMATORS, GroupStats, bridge_metrics, evaluate, fit_from_stats, ot_bary_maps,
                          permutation_null, token_pairs)
from zhunt.weights.masks import write_masks
from zhunt.data.store import StoreWriter
from zhunt.stages.bridge import run_bridge


def rotation(k, rng):
    Q, R = np.linalg.qr(rng.normal(size=(k, k)))
    return Q * np.sign(np.diag(R))


def test_planted_rotation_recovered_by_procrustes():
    rng = np.random.default_rng(0)
    N, k = 40, 8
    X = rng.normal(size=(N, k))
    R = rotation(k, rng)
    r = evaluate("procrustes", GroupStats.from_rows(X, X @ R))
    m = bridge_metrics(r["W"])
    assert m["orth_err"] < 1e-12
    np.testing.assert_allclose(r["W"], R, atol=1e-10)
    assert r["r2_loo"] > 1 - 1e-10 and r["r2_in"] > 1 - 1e-10
    assert m["kappa"] == pytest.approx(1.0)
    # same answer as scipy's implementation
    np.testing.assert_allclose(r["W"], orthogonal_procrustes(X, X @ R)[0], atol=1e-10)


def test_planted_affine_map_recovered_by_affine_fit():
    rng = np.random.default_rng(1)
    N, k = 40, 6
    X = rng.normal(size=(N, k))
    A, b = rng.normal(size=(k, k)), 3 * rng.normal(size=k)
    S = GroupStats.from_rows(X, X @ A + b)
    r = evaluate("affine", S)
    np.testing.assert_allclose(r["W"], A, atol=1e-9)
    np.testing.assert_allclose(r["b"], b, atol=1e-9)
    assert r["r2_loo"] > 1 - 1e-10
    assert evaluate("lstsq", S)["r2_loo"] < 0.99  # no intercept: cannot fit the offset
    assert evaluate("procrustes", S)["r2_loo"] < 0.5


@pytest.mark.parametrize("N,k", [(30, 5), (6, 8)])
def test_stats_loo_matches_explicit_refits(N, k):
    """LOO from sufficient statistics == refitting on the data without each row (also N <= k)."""
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(N, k)), rng.normal(size=(N, k))
    S = GroupStats.from_rows(X, Y)
    sst = ((Y - Y.mean(0)) ** 2).sum()
    # (Procrustes is unique only when X^T Y has full rank, i.e. not when N <= k)
    for est in ("lstsq", "procrustes", "affine") if N > k else ("lstsq", "affine"):
        err = 0.0
        for i in range(N):
            keep = np.arange(N) != i
            Xi, Yi = X[keep], Y[keep]
            if est == "lstsq":
                W, b = np.linalg.pinv(Xi) @ Yi, np.zeros(k)
            elif est == "procrustes":
                W, b = orthogonal_procrustes(Xi, Yi)[0], np.zeros(k)
            else:
                xm, ym = Xi.mean(0), Yi.mean(0)
                W = np.linalg.pinv(Xi - xm) @ (Yi - ym)
                b = ym - xm @ W
            err += ((Y[i] - X[i] @ W - b) ** 2).sum()
        assert evaluate(est, S)["r2_loo"] == pytest.approx(1 - err / sst, rel=1e-6, abs=1e-8), est
    # minimum-norm solution when N <= k; the seed's normal equations would be singular
    W, _ = fit_from_stats("lstsq", S.total())
    np.testing.assert_allclose(W[0], np.linalg.pinv(X) @ Y, atol=1e-8)
    if N <= k:
        assert evaluate("lstsq", S)["r2_in"] == pytest.approx(1.0)  # interpolation
    # ridge at its selected alpha equals the closed form
    r = evaluate("ridge", S)
    W_r = np.linalg.solve(X.T @ X + r["alpha"] * np.eye(k), X.T @ Y)
    np.testing.assert_allclose(r["W"], W_r, atol=1e-8)


def test_grouped_stats_equal_row_stats():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    g = np.repeat(np.arange(5), 4)
    S = GroupStats.from_rows(X, Y, g)
    assert S.A.shape == (5, 4, 4)
    np.testing.assert_allclose(S.total().A[0], X.T @ X)
    np.testing.assert_allclose(S.sst(), ((Y - Y.mean(0)) ** 2).sum())


def test_permutation_null_separates_planted_map():
    rng = np.random.default_rng(4)
    N, k = 30, 5
    X = rng.normal(size=(N, k))
    Y = X @ rotation(k, rng) + 0.1 * rng.normal(size=(N, k))
    obs = evaluate("procrustes", GroupStats.from_rows(X, Y))["r2_loo"]
    null = permutation_null("procrustes", lambda p: GroupStats.from_rows(X, Y[p]), N, 100, seed=0)
    assert obs > 0.95
    assert null[:, 1].max() < obs and null[:, 1].mean() < 0.2


def test_ot_token_pairs_recover_permuted_tokens():
    """en tokens = shuffled zh tokens: OT finds the matching, token-level fit is the identity."""
    rng = np.random.default_rng(5)
    N, d, k = 5, 10, 4
    zh = [rng.normal(size=(int(rng.integers(6, 10)), d)) for _ in range(N)]
    en = [z[rng.permutation(len(z))] for z in zh]
    maps = ot_bary_maps(zh, en, [(i, i) for i in range(N)])
    for i in range(N):
        np.testing.assert_allclose(maps[(i, i)] @ zh[i], en[i], atol=1e-10)
    V = rotation(d, rng)[:k]
    S = token_pairs([z @ V.T for z in zh], [e @ V.T for e in en], maps, None, "en->zh")
    assert S.A.shape[0] == N and S.n.sum() == sum(len(z) for z in zh)
    r = evaluate("lstsq", S)
    np.testing.assert_allclose(r["W"], np.eye(k), atol=1e-8)
    assert r["r2_loo"] > 1 - 1e-8


def make_store(path, R, N=10, d=16, L=2, seed=0):
    """Synthetic store: zh hidden states = en ones (+ small noise) times ``R``; a BOS outlier per prompt."""
    rng = np.random.default_rng(seed)
    meta, hid, tok, spec = [], [[] for _ in range(L + 1)], [], []
    for i in range(N):
        base = rng.normal(size=(int(rng.integers(5, 9)), d))
        for lang in ("en", "zh", "es"):
            T = len(base) + 1
            meta.append({"prompt_id": f"p{i:02d}", "lang": lang, "length": T})
            X = base @ R if lang == "zh" else base + 0.01 * rng.normal(size=base.shape)
            X = np.vstack([np.full((1, d), 100.0), X])  # BOS outlier (special, must be excluded)
            for j in range(L + 1):
                hid[j].append(X.astype(np.float32))
            tok.append(np.arange(T))
            spec.append(np.r_[True, np.zeros(T - 1, bool)])
    n = sum(m["length"] for m in meta)
    with StoreWriter(path, num_layers=L, hidden_size=d, n_rows_total=n, attrs={"model": "synthetic"}) as w:
        w.append(meta, [np.concatenate(h) for h in hid], np.concatenate(tok), np.concatenate(spec))


def test_run_bridge_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    d, ks = 16, [4, 12]
    V = rotation(d, rng)
    Q = rotation(4, rng)
    R = np.eye(d) + V[:4].T @ (Q - np.eye(4)) @ V[:4]   # rotates inside span(V[:4]) only: Z_zh = Z_en Q
    make_store(tmp_path / "acts.h5", R, N=10, d=d)
    for layer in (0, 1):
        write_masks(tmp_path / f"L{layer}.h5",
                    {"multihead": {"sigma": np.arange(d, 0, -1.0), "V": {k: V[:k] for k in ks}}}, {"layer": layer})
    fig = lambda n: [str(tmp_path / "fig" / f"{n}.pdf"), str(tmp_path / "fig" / f"{n}.png")]  # noqa: E731
    outputs = {"table": [str(tmp_path / "bridge.tsv"), str(tmp_path / "bridge.md")],
               "extra": [str(tmp_path / "bridge.spectra.tsv"), str(tmp_path / "bridge.null.tsv")],
               "fig_spectra": fig("bridge_spectra"), "fig_loo": fig("bridge_loo_r2"), "fig_null": fig("bridge_null")}
    run_bridge({"store": str(tmp_path / "acts.h5"), "masks": [str(tmp_path / "L0.h5"), str(tmp_path / "L1.h5")]},
               {"layers": [0, 1], "ks": ks, "n_permutations": 20, "site": "input", "site_variants": []}, outputs,
               wildcards={"model": "synthetic"})
    t = pd.read_csv(tmp_path / "bridge.tsv", sep="\t")
    assert len(t) == 2 * 2 * 2 * 2 * len(ESTIMATORS)  # layer x k x direction x level x estimator
    assert set(t["level"]) == {"pooled", "token"}
    assert t.loc[t["k"] == 12, "n_le_k"].all() and not t.loc[t["k"] == 4, "n_le_k"].any()
    assert t.loc[(t["k"] == 12) & (t["level"] == "pooled"), "warning"].str.contains("singular").all()
    for stem in ("bridge_spectra", "bridge_loo_r2", "bridge_null"):
        assert (tmp_path / "fig" / f"{stem}.pdf").exists() and (tmp_path / "fig" / f"{stem}.png").exists()
    assert (tmp_path / "bridge.spectra.tsv").exists() and (tmp_path / "bridge.null.tsv").exists()
    assert (tmp_path / "bridge.md").read_text().startswith("| site ")
    # the planted rotation inside Z: Procrustes recovers it from pooled vectors; OT token pairs (aligned
    # in the full space, which does not know the rotation) recover most of it; both beat the null
    pr = t[(t["k"] == 4) & (t["estimator"] == "procrustes")]
    assert (pr["orth_err"] < 1e-12).all() and np.allclose(pr["p_loo"], 1 / 21)
    assert (pr.loc[pr["level"] == "pooled", "r2_loo"] > 0.99).all()
    assert (pr.loc[pr["level"] == "token", "r2_loo"] > 0.5).all()
    ls = t[(t["k"] == 4) & (t["estimator"] == "lstsq") & (t["level"] == "pooled")]
    assert (ls["orth_err"] < 0.05).all()   # the unconstrained fit is itself nearly orthogonal
    # N <= k: in-sample R2 of the minimum-norm fit is 1 (interpolation), LOO is the honest number
    big = t[(t["k"] == 12) & (t["estimator"] == "lstsq") & (t["level"] == "pooled")]
    assert (big["r2_in"] > 1 - 1e-8).all() and (big["r2_loo"] < big["r2_in"]).all()
