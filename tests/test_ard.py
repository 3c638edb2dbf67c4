"""Tests for zhunt.activations.ard (Exp. C): planted structure, the seed objective's collapse, stages end to end."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from zhunt.activations.ard import (BIMODAL_ASHMAN_D, BIMODAL_BIC_GAIN, LOG10_ELL_OFF, TSV_COLUMNS, ArdProblem,
                                   Standardiser, ard_headline, ard_layer, ard_summary, cold_start, fit_ard,
                                   growth_rate, heldout_test, heldout_verdict, is_bimodal, middle_lambda,
                                   rotation_basis, svd_overlap, warm_start, z_energy, z_size)
from zhunt.calibration.generators import lengthscale_spectrum
from zhunt.errors import ZhuntError
from zhunt.io import write_table
from zhunt.report.ard import summary_markdown
from zhunt.stages.ard import read_run_files, write_run_file
from zhunt.stats import gmm_bimodality
from zhunt.weights.masks import read_mask, write_masks
from zhunt.data.store import ActivationStore, StoreWriter

SHARED, LANG = [0, 1, 2], [3, 4, 5]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: intra-op threads only add overhead (and contention on shared machines)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def planted_clouds(N=12, d=12, seed=0):
    """Axes 0-2: shared across languages, vary across problems; 3-5: language offset; the rest noise."""
    rng = np.random.default_rng(seed)
    zh, en = [], []
    for _ in range(N):
        c = rng.normal(0, 1.5, 3)
        for out, off in ((zh, 1.5), (en, -1.5)):
            X = rng.normal(0, 1, (int(rng.integers(8, 14)), d))
            X[:, SHARED] = c + 0.4 * rng.normal(size=(len(X), 3))
            X[:, LANG] += off
            out.append(X)
    return zh, en


@pytest.fixture(scope="module")
def planted():
    zh, en = planted_clouds()
    std = Standardiser.fit(np.concatenate(zh + en))
    return [std.transform(x) for x in zh], [std.transform(x) for x in en], std


def test_wellposed_keeps_exactly_the_shared_axes(planted):
    zh, en, _ = planted
    prob = ArdProblem(zh, en, device="cpu", n_neg=None)
    for lam in (0.001, 0.1):
        fit = fit_ard(prob, "wellposed", lam, cold_start(12), min_steps=300, max_steps=1000)
        x = fit.log_ell / np.log(10)
        others = np.setdiff1d(np.arange(12), SHARED)
        assert x[SHARED].max() + 1.0 < x[others].min(), np.round(x, 2)  # a full decade between the groups
        assert fit.converged
        # the kept axes make matched pairs indistinguishable but problems distinguishable
        assert fit.terms["mmd_lang"] < 0.05 < 1.0 < fit.terms["mmd_problem"]
        gm = gmm_bimodality(x)
        assert gm["bic_gain"] > 0 and set(np.flatnonzero(gm["low"])) == set(SHARED)


def test_seed_objective_collapses(planted):
    """The seed's objective has no finite optimum: ell keeps growing as long as steps are given."""
    zh, en, _ = planted
    prob = ArdProblem(zh, en, device="cpu", n_neg=4)
    for lam in (0.01, 0.1):
        fit = fit_ard(prob, "seed", lam, cold_start(12), min_steps=1500, max_steps=1500, log_every=100)
        med = np.median(fit.trajectory, axis=1) / np.log(10)
        assert np.all(np.diff(med[3:]) > 0), med                 # after a transient the median rises steadily
        assert med[-1] - med[0] > 0.5                            # by > half a decade in 1500 steps
        assert growth_rate(fit.trajectory, fit.trajectory_steps) > 0.02   # still rising at the end ...
        assert growth_rate(fit.trajectory, fit.trajectory_steps, q=10) > 0.02   # ... even the most-used axes
        # ... and the shared axes are not singled out: they end among the largest lengthscales
        assert np.median(fit.log_ell[SHARED]) > np.median(fit.log_ell)
    # with the plateau stop, the seed objective does not converge within the seed's budget
    fit = fit_ard(prob, "seed", 0.1, cold_start(12), min_steps=500, max_steps=1000)
    assert not fit.converged and fit.steps == 1000


def test_warm_start_profile_and_scale(planted):
    _, _, std = planted
    V = np.eye(12)[:3]
    z = z_energy(V)
    np.testing.assert_allclose(z, np.r_[np.ones(3), np.zeros(9)])
    le = warm_start(z, std.sample)
    # seed profile up to a constant: -log(z + eps)
    np.testing.assert_allclose(le - le[0], -np.log(z + 1e-3) + np.log(1 + 1e-3), atol=1e-12)
    # the constant gives the median token pair D = 1
    W = std.sample * np.exp(-le)
    iu = np.triu_indices(len(W), 1)
    D = (((W[:, None, :] - W[None, :, :]) ** 2).sum(-1))[iu]
    assert np.median(D) == pytest.approx(1.0, rel=1e-6)
    # cold start: the median heuristic
    D0 = (((std.sample[:, None, :] - std.sample[None, :, :]) ** 2).sum(-1))[iu]
    assert np.median(D0) == pytest.approx(1.0, rel=1e-6)


def test_rotated_basis_and_energy():
    rng = np.random.default_rng(0)
    V = np.linalg.qr(rng.normal(size=(10, 3)))[0].T
    B = rotation_basis(V)
    np.testing.assert_allclose(B @ B.T, np.eye(10), atol=1e-12)
    np.testing.assert_allclose(B[:3], V)
    np.testing.assert_allclose(z_energy(V, B), np.r_[np.ones(3), np.zeros(7)], atol=1e-12)
    assert z_energy(V).sum() == pytest.approx(3.0)


def test_gmm_loglik_beats_truth_and_recovers_parameters():
    """EM's optimum: its log-likelihood is >= that of the true parameters, which it recovers."""
    from scipy.stats import norm

    rng = np.random.default_rng(2)
    x = np.r_[rng.normal(-1.0, 0.4, 300), rng.normal(1.5, 0.6, 700)]
    g = gmm_bimodality(x)
    assert g["mu_low"] == pytest.approx(-1.0, abs=0.1) and g["mu_high"] == pytest.approx(1.5, abs=0.1)
    assert g["sd_low"] == pytest.approx(0.4, abs=0.06) and g["w_low"] == pytest.approx(0.3, abs=0.04)

    def loglik(w, m1, s1, m2, s2):
        return np.log(w * norm.pdf(x, m1, s1) + (1 - w) * norm.pdf(x, m2, s2)).sum()

    ll_fit = loglik(g["w_low"], g["mu_low"], g["sd_low"], g["mu_high"], g["sd_high"])
    assert ll_fit >= loglik(0.3, -1.0, 0.4, 1.5, 0.6) - 1e-6
    ll1 = norm.logpdf(x, x.mean(), x.std()).sum()
    assert g["bic_gain"] == pytest.approx((-2 * ll1 + 2 * np.log(len(x))) - (-2 * ll_fit + 5 * np.log(len(x))),
                                          rel=1e-6)


# -- |Z| rule: planted counts recovered exactly, unimodal -> 0 or d -----------------------------------
# Over seeds (null: one scale, |Z| = d or 0; planted: 7 of 40 short axes, |Z| = 7):
# tests/test_calibration.py, case ard_z_size (the same generator).
def test_z_size_planted_axes_are_the_short_ones():
    """The planted short axes are exactly the ones counted; the seed's median rule gives d/2 instead."""
    for seed in range(3):
        log_ell = lengthscale_spectrum(np.random.default_rng(300 + seed), 40, n_short=7)
        z = z_size(log_ell)
        assert z["z_size"] == 7 and z["z_rule"] == "bimodal"
        assert set(np.flatnonzero(z["active"])) == set(np.flatnonzero(log_ell / np.log(10) < 0.5))
        assert (log_ell < np.median(log_ell)).sum() == 20
    for n_short in (1, 20, 39):  # any count in 1..d-1
        rng = np.random.default_rng(n_short)
        x = np.r_[rng.normal(-0.5, 0.1, n_short), rng.normal(1.5, 0.1, 40 - n_short)]
        assert z_size(x * np.log(10))["z_size"] == n_short


@pytest.mark.parametrize("level, expected, rule", [(0.0, 40, "unimodal-used"), (2.0, 0, "unimodal-off")])
def test_z_size_unimodal_is_all_or_nothing(level, expected, rule):
    """One scale for every axis -> d (axes in use) or 0 (switched off)."""
    z = z_size(lengthscale_spectrum(np.random.default_rng(400), 40, level=level))
    assert z["z_size"] == expected and z["z_rule"] == rule
    # both modes switched off -> 0
    x = np.r_[np.full(10, 1.2), np.full(30, 3.0)] + np.random.default_rng(0).normal(0, 0.05, 40)
    assert z_size(x * np.log(10))["z_size"] == 0
    assert BIMODAL_BIC_GAIN == 10.0 and BIMODAL_ASHMAN_D == 2.0 and LOG10_ELL_OFF == 1.0
    assert is_bimodal(BIMODAL_BIC_GAIN + 1, BIMODAL_ASHMAN_D + 1) and not is_bimodal(BIMODAL_BIC_GAIN, 5.0)


def test_heldout_verdict_labels():
    assert heldout_verdict(0.5, 0.01) == "problems, not languages"
    assert heldout_verdict(0.01, 0.01) == "languages and problems"
    assert heldout_verdict(0.01, 0.5) == "languages only"
    assert heldout_verdict(0.5, 0.5) == "neither"
    assert heldout_verdict(float("nan"), 0.01) == "untestable"


def test_gmm_and_overlap():
    rng = np.random.default_rng(1)
    uni = rng.normal(size=400)
    bi = np.r_[rng.normal(-2, 0.3, 100), rng.normal(2, 0.3, 300)]
    g_bi, g_uni = gmm_bimodality(bi), gmm_bimodality(uni)
    assert g_bi["bic_gain"] > 100 and g_bi["ashman_d"] > 5 and g_bi["n_low"] == 100
    assert g_uni["bic_gain"] < 10 and g_uni["ashman_d"] < 2
    z = np.r_[np.linspace(1, 0.5, 5), np.full(15, 0.01)]
    ov = svd_overlap(np.r_[np.ones(5, bool), np.zeros(15, bool)], z)
    assert ov["overlap"] == 1.0 and ov["chance"] == 0.25 and ov["p"] < 1e-3
    assert np.isnan(svd_overlap(np.zeros(20, bool), z)["overlap"])


# ---------------------------------------------------------------- stages on a synthetic store
def write_planted_store(path, N=16, d=12, L=2, seed=0):
    """Planted structure at every layer (scaled per layer), plus 'es' prompts and BOS outliers."""
    zh, en = planted_clouds(N=N, d=d, seed=seed)
    rng = np.random.default_rng(seed + 1)
    meta, hid, spec = [], [[] for _ in range(L + 1)], []
    for i in range(N):
        for lang, X in (("zh", zh[i]), ("en", en[i]), ("es", rng.normal(size=(5, d)))):
            X = np.vstack([np.full((1, d), 50.0), X])
            meta.append({"prompt_id": f"q{i:02d}", "lang": lang, "length": len(X)})
            for j in range(L + 1):
                hid[j].append((X * (1 + j)).astype(np.float32))
            spec.append(np.r_[True, np.zeros(len(X) - 1, bool)])
    n = sum(m["length"] for m in meta)
    with StoreWriter(path, num_layers=L, hidden_size=d, n_rows_total=n, attrs={"model": "planted"}) as w:
        w.append(meta, [np.concatenate(h) for h in hid], np.zeros(n, np.int64), np.concatenate(spec))


def write_planted_mask(path, d=12, ks=(3,)):
    V = np.eye(d)[:max(ks)]  # the SVD mask knows the shared axes
    write_masks(path, {"multihead": {"sigma": np.arange(d, 0, -1.0), "V": {k: V[:k] for k in ks}}}, {"layer": 0})


@pytest.fixture(scope="module")
def stage_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ard")
    write_planted_store(tmp / "acts.h5")
    write_planted_mask(tmp / "mask.h5")
    out = {}
    with ActivationStore(tmp / "acts.h5") as st:
        for layer in (0, 1):
            out[layer] = ard_layer(st, read_mask(tmp / "mask.h5", "multihead", 3), "planted", layer, [0.01, 0.1],
                                   lr=0.01, min_steps=100, max_steps=200, k_warm=3, seed=0, device="cpu", n_neg=4)
            write_run_file(tmp / f"L{layer}.h5", out[layer])  # as the ard_layer stage writes them
            write_table(out[layer].table, tmp / f"L{layer}.tsv")
    return tmp, out


def summary_inputs(tmp):
    """The per-layer tables and run files of ``stage_files``, as rule ``ard_summary`` reads them."""
    per = pd.concat([pd.read_csv(tmp / f"L{layer}.tsv", sep="\t") for layer in (0, 1)], ignore_index=True)
    return per, read_run_files([tmp / "L0.h5", tmp / "L1.h5"])


def test_ard_layer_files(stage_files):
    tmp, out = stage_files
    t = pd.read_csv(tmp / "L0.tsv", sep="\t")
    assert list(t.columns) == ["site", "hidden_index"] + TSV_COLUMNS
    assert (t["site"] == "input").all() and (t["hidden_index"] == 0).all()  # layer 0 reads hidden index 0
    assert len(t) == 2 * 2 * 2 * 2  # lambda x init x objective x basis
    assert set(t["n_problems"]) == {16}
    with h5py.File(tmp / "L0.h5", "r") as f:
        for obj in ("seed", "wellposed"):
            for basis in ("coord", "rotated"):
                for init in ("warm", "cold"):
                    for lam in ("lambda0.01", "lambda0.1"):
                        g = f[f"{obj}/{basis}/{init}/{lam}"]
                        assert g["lengthscale"].shape == (12,)
                        assert g["trajectory"].shape[1] == 12 and g["trajectory"].shape[0] >= 2
                        assert {"mmd_lang", "mmd_problem", "penalty", "steps", "converged"} <= set(g.attrs)
        assert f.attrs["layer"] == 0 and f.attrs["hidden_index"] == 0 and f.attrs["site"] == "input"
    # the well-posed objective keeps the shared axes in both bases (the mask = the shared axes, so the
    # rotated basis's first 3 coordinates are the same axes); overlap with the SVD-Z is complete
    wp = t[(t["objective"] == "wellposed")]
    with h5py.File(tmp / "L0.h5", "r") as f:
        for _, r in wp.iterrows():
            le = f[f"wellposed/{r['basis']}/{r['init']}/lambda{r['lambda']:g}/log_lengthscale"][()]
            assert set(np.argsort(le)[:3]) == set(SHARED), (r["basis"], r["init"], r["lambda"], le)
    # every SVD-Z axis is among the surviving axes: hits = overlap * |active| = 3 (= |T|)
    assert np.allclose(wp["overlap_svd"] * wp["n_active_median"], 3)
    assert (wp["overlap_chance"] == 3 / 12).all()
    sd = t[t["objective"] == "seed"]
    assert (sd["growth_per_100_steps"] > 0).all() and not sd["converged"].any()


def test_ard_layer_threads_equal_serial(stage_files):
    """Runs fitted two at a time in threads (the rule's CPU path) give the serial grid bit for bit,
    in the same row order, and leave torch's thread count as it was."""
    tmp, out = stage_files
    before = torch.get_num_threads()
    with ActivationStore(tmp / "acts.h5") as st:
        par = ard_layer(st, read_mask(tmp / "mask.h5", "multihead", 3), "planted", 0, [0.01, 0.1],
                        lr=0.01, min_steps=100, max_steps=200, k_warm=3, seed=0, device="cpu", n_neg=4, n_jobs=2)
    assert torch.get_num_threads() == before
    cols = [c for c in par.table.columns if c != "seconds"]
    pd.testing.assert_frame_equal(par.table[cols], out[0].table[cols], check_exact=True)
    for site, (runs, _, _) in par.sites.items():
        for a, b in zip(runs, out[0].sites[site][0]):
            assert (a["objective"], a["basis"], a["init"], a["lam"]) == (b["objective"], b["basis"], b["init"], b["lam"])
            np.testing.assert_array_equal(a["fit"].log_ell, b["fit"].log_ell)
            np.testing.assert_array_equal(a["fit"].trajectory, b["fit"].trajectory)


def test_ard_layer_threads_stop_at_a_failed_run(stage_files, monkeypatch):
    """A run that fails in the threaded grid fails the layer without fitting the queued runs first."""
    import time as _time

    import zhunt.activations.ard as ard_mod

    tmp, _ = stage_files
    calls = []

    def failing_fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise FloatingPointError("ARD objective became nan at step 1")
        _time.sleep(0.05)
        raise RuntimeError("a run fitted after the failure")

    monkeypatch.setattr(ard_mod, "fit_ard", failing_fit)
    with ActivationStore(tmp / "acts.h5") as st, pytest.raises(FloatingPointError):
        ard_layer(st, read_mask(tmp / "mask.h5", "multihead", 3), "planted", 0, [0.01, 0.1],
                  lr=0.01, min_steps=1, max_steps=2, k_warm=3, seed=0, device="cpu", n_neg=4, n_jobs=2)
    assert len(calls) <= 3  # the failed run, the one beside it, at most one more already started; 16 in the grid


def test_ard_summary(stage_files):
    tmp, _ = stage_files
    per, runs = summary_inputs(tmp)
    res = ard_summary(per, runs, 1, "planted")
    t = res.table
    assert len(t) == 32 and {"z_size", "z_rule", "z_size_median", "threshold_pooled_log10",
                             "overlap_pooled"} <= set(t.columns)
    assert res.headline is None
    md = summary_markdown(t, 1, "planted", res.collapse)
    assert "Collapse of the seed objective" in md and "|Z| vs layer" in md
    c = res.collapse
    assert c["n_runs"] == 16 and c["n_converged"] == 0 and c["median_growth_per_100_steps"] > 0
    with pytest.raises(ZhuntError, match="layer 5 is not among the ARD layers"):
        ard_summary(per, runs, 5, "planted")


def test_ard_summary_stage_writes_the_rule_outputs(stage_files, tmp_path):
    """The rule's stage: inputs/params/outputs dicts in, exactly the named outputs out, same table as the function."""
    from zhunt.stages.ard import run_ard_summary

    tmp, _ = stage_files
    held = pd.DataFrame([dict(model="planted", layer=1, **{"lambda": 0.1}, objective="wellposed", init="warm",
                              basis="coord", kernel=k, test=te, p_value=p, z_size_fit=3, z_rule_fit="bimodal", d=12)
                         for k, te, p in (("learned", "language", 0.6), ("learned", "problem", 0.01))])
    held.to_csv(tmp_path / "held.tsv", sep="\t", index=False)
    o = tmp_path / "o"
    outs = {"table": [o / "summary.tsv", o / "summary.md"], "headline": o / "headline.tsv",
            **{k: [o / f"{k}.pdf", o / f"{k}.png"] for k in ("fig_size", "fig_spectrum", "fig_traj")}}
    run_ard_summary({"tsv": [tmp / "L0.tsv", tmp / "L1.tsv"], "h5": [tmp / "L0.h5", tmp / "L1.h5"],
                     "heldout": tmp_path / "held.tsv"}, {"primary": 1, "site": "input"}, outs,
                    wildcards={"model": "planted"})
    assert sorted(f.name for f in o.iterdir()) == sorted(
        ["summary.tsv", "summary.md", "headline.tsv"] + [f"{k}.{x}" for k in ("fig_size", "fig_spectrum", "fig_traj")
                                                         for x in ("pdf", "png")])
    res = ard_summary(*summary_inputs(tmp), 1, "planted", heldout=held, site="input")
    write_table(res.table, tmp_path / "s.tsv")
    assert (o / "summary.tsv").read_bytes() == (tmp_path / "s.tsv").read_bytes()
    h = pd.read_csv(o / "headline.tsv", sep="\t").iloc[0]
    assert h["lambda"] == 0.1 and h["heldout_verdict"] == "problems, not languages"
    assert len(res.table) == 32
    assert "Headline |Z|" in (o / "summary.md").read_text()


def test_middle_lambda():
    assert middle_lambda([0.1, 0.01, 1.0]) == 0.1
    assert middle_lambda([0.5, 0.01, 0.1, 1.0]) == 0.5  # the upper middle of an even grid
    with pytest.raises(ZhuntError, match="ard.lambdas"):
        middle_lambda([])


def test_heldout_test(tmp_path):
    write_planted_store(tmp_path / "acts.h5", N=16)
    write_planted_mask(tmp_path / "mask.h5")
    with ActivationStore(tmp_path / "acts.h5") as st:
        res = heldout_test(st, read_mask(tmp_path / "mask.h5", "multihead", 3), 1, 0.01, model_name="planted",
                           min_steps=100, max_steps=300, n_permutations=100, seed=0, device="cpu", n_neg=4)
    t = res.table.set_index(["kernel", "test"])
    assert len(t) == 4 and set(t["n_test"]) == {8}
    # the learned kernel no longer tells the languages apart but still tells problems apart ...
    assert t.loc[("learned", "language"), "p_value"] > 0.05
    assert t.loc[("learned", "problem"), "p_value"] < 0.05
    # ... whereas the median-heuristic kernel sees the language axes
    assert t.loc[("median_heuristic", "language"), "p_value"] < 0.05
    assert res.fit.steps <= 300
    # the refit keeps the three shared axes: the mixture-model count says |Z| = 3
    assert set(t["z_size_fit"]) == {3} and set(t["d"]) == {12}


def test_headline_from_grid_and_heldout(stage_files, tmp_path):
    """The headline |Z| is the mixture-model count of the held-out run, with that test's verdict."""
    tmp, _ = stage_files
    held = pd.DataFrame([dict(model="planted", layer=1, **{"lambda": 0.01}, objective="wellposed", init="warm",
                              basis="coord", kernel=k, test=te, p_value=p, z_size_fit=3, z_rule_fit="bimodal",
                              d=12)
                         for k, te, p in (("learned", "language", 0.6), ("learned", "problem", 0.01),
                                          ("median_heuristic", "language", 0.01),
                                          ("median_heuristic", "problem", 0.01))])
    res = ard_summary(*summary_inputs(tmp), 1, "planted", heldout=held)
    h = res.headline.iloc[0]
    row = res.table.query("layer == 1 and objective == 'wellposed' and init == 'warm' and basis == 'coord' "
                             "and `lambda` == 0.01").iloc[0]
    assert h["z_size"] == row["z_size"] == 3 and h["z_rule"] == "bimodal"
    assert h["heldout_verdict"] == "problems, not languages" and "BIC gain > 10" in h["criteria"]
    assert "Headline |Z|" in summary_markdown(res.table, 1, "planted", res.collapse, res.headline)
    bad = held.assign(objective="seed", init="cold", **{"lambda": 0.5})
    with pytest.raises(ZhuntError, match="is not in the ARD grid"):
        ard_headline(res.table, bad, 1, "planted")
