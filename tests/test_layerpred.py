"""Do the weights predict the layer? Statistics, calibration of the verdict, the stages."""

import math

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from zhunt.calibration.generators import dip, weight_profiles
from zhunt.experiments import layerpred as lp
from zhunt.errors import ZhuntError
from zhunt.stages.layers import run_layer_comparison, run_models_layer_prediction


def _ranks(v):
    """Average ranks, written independently of scipy (ties share the mean rank)."""
    v = np.asarray(v, dtype=float)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for val in np.unique(v):
        sel = v == val
        r[sel] = r[sel].mean()
    return r


def _brute_p(w, d):
    """Shift/reversal permutation p by explicit loops and Pearson-of-ranks Spearman."""
    n = len(w)
    rw = _ranks(w)

    def rho(y):
        ry = _ranks(y)
        return np.corrcoef(rw, ry)[0, 1]

    obs = rho(d)
    null = []
    for rev in (False, True):
        base = d[::-1] if rev else d
        for s in range(n):
            null.append(rho(np.concatenate([base[n - s:], base[:n - s]]) if s else base))
    return obs, np.mean(np.array(null) >= obs - 1e-12)


def test_cycle_symmetries_are_distinct_permutations():
    G = lp.cycle_symmetries(7)
    assert G.shape == (14, 7)
    assert (G[0] == np.arange(7)).all()
    assert len({tuple(g) for g in G}) == 14
    assert all(sorted(g) == list(range(7)) for g in G)


def test_shift_spearman_matches_brute_force():
    rng = np.random.default_rng(3)
    for n in (6, 11, 18):
        w, d = rng.normal(size=n), rng.normal(size=n)
        d[2] = d[5]  # a tie
        r = lp.shift_spearman(w, d)
        rho, p = _brute_p(w, d)
        assert_allclose(r["rho"], rho, atol=1e-12)
        assert_allclose(r["p_shift"], p, atol=1e-12)
        assert r["p_min"] == 1 / (2 * n) and r["n"] == n


def test_shift_spearman_orientation_and_nan_layers():
    w = np.arange(10.0)
    d = np.arange(10.0) ** 2
    assert lp.shift_spearman(w, d, 1, -1)["rho"] == pytest.approx(-1.0)
    d2 = d.copy()
    d2[0] = np.nan
    r = lp.shift_spearman(w, d2)
    assert r["n"] == 9 and r["rho"] == pytest.approx(1.0)
    assert math.isnan(lp.shift_spearman(w, np.ones(10))["rho"])


def test_verdict_thresholds():
    assert lp.MIN_LAYERS == 10
    assert lp.layer_verdict(0.01, 0.0, 6) == "too few layers"
    assert lp.layer_verdict(0.01, lp.PREDICT_FRAC, 30) == "predicts"
    assert lp.layer_verdict(0.01, lp.NEAR_FRAC, 30) == "near"
    assert lp.layer_verdict(0.01, 0.5, 30) == "does not predict"
    assert lp.layer_verdict(0.2, 0.0, 30) == "does not predict"
    assert lp.layer_verdict(math.nan, 0.0, 30) == "does not predict"


# L = 30 (the null of random per-layer scores and the planted profile over seeds): tests/test_calibration.py,
# case layer_prediction (the same generators).
@pytest.mark.parametrize("L", [18])
def test_null_random_scores_do_not_predict(L):
    """Random per-layer data scores -> "does not predict" in >= 95% of 100 seeds."""
    from zhunt.stats import binomial_ci

    n_seeds, hits = 100, 0
    for seed in range(n_seeds):
        rng = np.random.default_rng([17, L, seed])
        w = weight_profiles(L, rng)
        pred = int(np.argmin(w["attn_eff_rank_mean"]))
        data = pd.DataFrame({"layer": np.arange(L), "rel_ratio": rng.uniform(0.7, 1.1, L),
                             "ratio_Z_percentile": rng.uniform(0, 100, L),
                             "E_lang_Z_over_chance": rng.uniform(0.5, 1.5, L)})
        comp, _ = lp.compare_layers(w, data, pred, L)
        hits += comp.loc[comp["primary"], "verdict"].iloc[0] == "does not predict"
    rate, lo, hi = binomial_ci(hits, n_seeds)
    assert rate >= 0.95, (rate, lo, hi)


def test_null_smooth_independent_profiles_do_not_predict():
    """Independent smooth (AR(1), phi=0.8) profiles: the shift null keeps false positives near ALPHA,
    where scipy's exchangeable-layers p-value is far too liberal."""
    L, n_seeds = 30, 100
    pos = lib = 0
    for seed in range(n_seeds):
        rng = np.random.default_rng([29, seed])

        def ar1():
            e = rng.normal(size=L + 50)
            x = np.zeros_like(e)
            for t in range(1, len(e)):
                x[t] = 0.8 * x[t - 1] + e[t]
            return x[50:]

        w, d = ar1(), ar1()
        r = lp.shift_spearman(w, d, -1, -1)
        pos += r["p_shift"] <= lp.ALPHA
        lib += r["p_iid"] / 2 <= lp.ALPHA and r["rho"] > 0
    assert pos / n_seeds <= 0.10  # ALPHA plus sampling slack at 100 seeds
    assert lib > pos


@pytest.mark.parametrize("L", [18])
def test_planted_data_best_at_prediction_predicts(L):
    """Data profile = the weight profile's shape + noise, best at the predicted layer -> "predicts"."""
    ok = 0
    for seed in range(20):
        rng = np.random.default_rng([5, L, seed])
        b = int(rng.integers(2, L - 2))
        w = weight_profiles(L, rng, dip_at=b)
        data = pd.DataFrame({"layer": np.arange(L),
                             "rel_ratio": 0.7 + 0.1 * dip(np.arange(L), b) / L
                             + rng.normal(scale=0.01, size=L)})
        data.loc[b, "rel_ratio"] = 0.6
        comp, corr = lp.compare_layers(w, data, b, L)
        row = comp.iloc[0]
        assert row["data_best_layer"] == b and row["distance_layers"] == 0
        ok += row["verdict"] == "predicts"
        assert set(corr["weight_score"]) == set(lp.WEIGHT_SCORES) and corr["p_holm"].notna().all()
    assert ok >= 19


def test_planted_offset_best_is_near_then_not():
    """Same profile shape as the weights, but the single best layer planted 4 (then 12) layers away:
    the correlation stays significant, the distance decides "near" vs "does not predict"."""
    L, b = 30, 10
    rng = np.random.default_rng(0)
    w = weight_profiles(L, rng, dip_at=b)
    x = np.arange(L)
    for off, label in ((4, "near"), (12, "does not predict")):
        data = pd.DataFrame({"layer": x, "rel_ratio": 0.7 + 0.1 * dip(x, b) / L})
        data.loc[b + off, "rel_ratio"] = 0.6
        row = lp.compare_layers(w, data, b, L)[0].iloc[0]
        assert row["distance_layers"] == off and row["p_shift"] <= lp.ALPHA
        assert row["verdict"] == label


def test_causal_scores_and_missing_layers():
    t = pd.DataFrame({"layer": [0, 0, 3, 3, 3, 6], "site": ["input"] * 5 + ["output"],
                      "subspace": ["z", "das", "z", "z", "random", "z"], "k": 8,
                      "iia": [0.1, 0.5, 0.2, 0.4, 0.9, 1.0], "npe": [0.0, 0.3, 0.1, 0.2, 0.5, 0.9]})
    c = lp.causal_scores(t, site="input", k=8)
    assert list(c["layer"]) == [0, 3]
    assert_allclose(c["iia_z"], [0.1, 0.3])
    assert_allclose(c["iia_das"].iloc[0], 0.5) and math.isnan(c["iia_das"].iloc[1])
    with pytest.raises(ZhuntError, match="missing"):
        lp.causal_scores(t.drop(columns="npe"))


def test_layer_sweep_matches_phase2(tmp_path):
    """The sweep's per-layer numbers equal zhunt.activations.zspace's Phase 2 functions on the same vectors,
    and the site picks hidden index l (input) or l + 1 (output)."""
    from zhunt.subspace import project, project_complement, random_subspace

    rng = np.random.default_rng(1)
    d, N, L = 24, 6, 3

    class Store:
        hidden_size = d

        def __init__(self):
            self.X = {(j, lang): rng.normal(size=(N, d)) for j in range(L + 1) for lang in ("zh", "en")}
            self.languages = ["en", "zh"]
            self.path = "mem"

        def prompt_ids(self, lang=None):
            return [f"p{i}" for i in range(N)]

        def pooled(self, j, lang, pooling="mean", exclude_special=True, exclude_ids=None):
            assert exclude_ids is None  # the sweep uses the plain pooling
            return self.X[(j, lang)]

    store = Store()
    masks = {l: random_subspace(4, d, np.random.default_rng(l)) for l in range(L)}
    for site, off in (("input", 0), ("output", 1)):
        t = lp.layer_sweep(store, masks, 4, site=site, poolings=("mean",), n_random=20)
        assert list(t["hidden_index"]) == [l + off for l in range(L)]
        for l in range(L):
            Xa, Xb = store.X[(l + off, "zh")], store.X[(l + off, "en")]
            V = masks[l]
            cross = Xa - Xb
            iu, ju = np.triu_indices(N, 1)
            within = np.concatenate([Xa[iu] - Xa[ju], Xb[iu] - Xb[ju]])
            rz = np.linalg.norm(project(cross, V), axis=1).mean() / np.linalg.norm(project(within, V), axis=1).mean()
            rp = (np.linalg.norm(project_complement(cross, V), axis=1).mean()
                  / np.linalg.norm(project_complement(within, V), axis=1).mean())
            row = t.iloc[l]
            assert_allclose([row["ratio_Z"], row["ratio_Zperp"], row["rel_ratio"]], [rz, rp, rz / rp], rtol=1e-10)
            e = np.sum(project(cross, V) ** 2) / np.sum(cross ** 2)
            assert_allclose(row["E_lang_Z_over_chance"], e / (4 / d), rtol=1e-10)


def _stage_inputs(tmp_path, L=12, b=5, seed=0):
    rng = np.random.default_rng(seed)
    w = weight_profiles(L, rng, dip_at=b)
    w["attn_eff_rank_std"] = 1.0
    w["phase"] = ["encode"] + ["compute"] * (L - 3) + ["decode"] * 2
    w["predicted"] = w["layer"] == b
    w.to_csv(tmp_path / "layer_scores.tsv", sep="\t", index=False)
    x = np.arange(L)
    rows = []
    for pooling in ("mean", "last"):
        rel = 0.7 + 0.1 * dip(x, b) / L + (0 if pooling == "mean" else 0.2)
        rows.append(pd.DataFrame({"model": "m", "layer": x, "site": "input", "hidden_index": x, "k": 8,
                                  "kind": "multihead", "pooling": pooling, "ratio_Z": rel, "ratio_Zperp": 1.0,
                                  "rel_ratio": rel, "ratio_rand_lo": 0.9, "ratio_rand_hi": 1.1,
                                  "ratio_Z_percentile": 100 * rel - 60, "E_lang_Z_over_chance": rel}))
    pd.concat(rows).to_csv(tmp_path / "sweep.tsv", sep="\t", index=False)
    causal = pd.DataFrame({"layer": np.repeat(x, 2), "site": "input", "k": 8, "subspace": ["z", "das"] * L,
                           "iia": rng.uniform(size=2 * L), "npe": rng.uniform(size=2 * L)})
    causal.to_csv(tmp_path / "subspaces.tsv", sep="\t", index=False)
    return tmp_path


def _compare(d, out, prefix="", causal=True, fig=None):
    """The comparison stage on the inputs in ``d``; outputs ``out/{prefix}comparison.tsv`` etc."""
    inputs = {"scores": str(d / "layer_scores.tsv"), "sweep": str(d / "sweep.tsv")}
    if causal:
        inputs["causal"] = str(d / "subspaces.tsv")
    table = lambda n: [str(out / f"{prefix}{n}.tsv"), str(out / f"{prefix}{n}.md")]  # noqa: E731
    fig = fig if fig is not None else out / f"{prefix}fig"
    outputs = {"comparison": table("comparison"), "correlations": table("correlations"),
               "verdict": str(out / f"{prefix}verdict.md"), "fig": [f"{fig}.pdf", f"{fig}.png"]}
    run_layer_comparison(inputs, {"site": "input"}, outputs, wildcards={"model": "m"})
    return {"c.tsv": out / f"{prefix}comparison.tsv", "r.tsv": out / f"{prefix}correlations.tsv",
            "v.md": out / f"{prefix}verdict.md"}


def test_comparison_stage_and_cross_model_table(tmp_path):
    from zhunt.seeds import QWEN25_3B_LAYER

    d = _stage_inputs(tmp_path)
    out = _compare(d, tmp_path)
    comp = pd.read_csv(out["c.tsv"], sep="\t")
    assert set(comp["data_score"]) == set(lp.DATA_SCORES) | set(lp.CAUSAL_SCORES)
    prim = comp[comp["primary"]].iloc[0]
    assert prim["data_score"] == lp.PRIMARY_DATA and prim["data_best_layer"] == 5 and prim["k"] == 8
    assert prim["verdict"] == "predicts"  # 12 layers: p can reach 1/24
    corr = pd.read_csv(out["r.tsv"], sep="\t")
    assert len(corr) == len(lp.WEIGHT_SCORES) * len(comp)
    assert (corr["p_holm"] >= corr["p_shift"] - 1e-12).all()
    text = out["v.md"].read_text()
    assert "Verdict: predicts" in text and f"p <= {lp.ALPHA}" in text and f"{lp.PREDICT_FRAC} of depth" in text
    assert (tmp_path / "fig.pdf").stat().st_size > 0 and (tmp_path / "fig.png").stat().st_size > 0

    run_models_layer_prediction({"comparisons": [str(out["c.tsv"])]}, {},
                                {"table": [str(tmp_path / "x.tsv"), str(tmp_path / "x.md")],
                                 "fig": [str(tmp_path / "xfig.pdf"), str(tmp_path / "xfig.png")]})
    t = pd.read_csv(tmp_path / "x.tsv", sep="\t")
    assert list(t["reference"]) == [False, True]
    ref = t.iloc[1]
    assert ref["predicted_layer"] == QWEN25_3B_LAYER["predicted_layer"] == 33
    assert ref["data_best_layer"] == 32 and ref["distance_frac"] == pytest.approx(1 / 35, rel=1e-5)  # TSV: 6 digits
    assert t.iloc[0]["predicted_frac"] == pytest.approx(5 / 11, rel=1e-5)
    assert (tmp_path / "xfig.png").stat().st_size > 0


def test_causal_sweep_gives_z_at_every_layer_and_das_stays_from_the_cells(tmp_path):
    """With layers/causal.tsv as input, iia_z / npe_z come from the causal sweep (every layer) and
    iia_das / npe_das from patching/subspaces.tsv (its layers only); a planted IIA peak is found."""
    L, b = 12, 5
    d = _stage_inputs(tmp_path, L=L, b=b)
    x = np.arange(L)
    iia = 0.2 + 0.05 * np.cos(x)
    iia[b] = 0.9
    sweep = pd.DataFrame({"model": "m", "layer": x, "site": "input", "hidden_index": x, "k": 8, "alignment": "mean",
                          "direction": "en<-zh", "source": "donor", "n_pairs": 20, "n_iia": 18, "iia": iia,
                          "iia_lo": iia - 0.1, "iia_hi": iia + 0.1, "npe": iia / 2, "npe_lo": 0.0, "npe_hi": 1.0})
    sweep.to_csv(d / "causal.tsv", sep="\t", index=False)
    sub = pd.read_csv(d / "subspaces.tsv", sep="\t")  # the cells: DAS at layers 4, 5; decoy z rows at 0, 1
    das, z = sub["subspace"] == "das", sub["subspace"] == "z"
    sub = sub[(das & sub["layer"].isin([4, 5])) | (z & (sub["layer"] < 2))]
    sub = sub.assign(iia=np.where(sub["subspace"] == "z", 99.0, sub["iia"]))
    sub.to_csv(d / "subspaces.tsv", sep="\t", index=False)
    r = lp.comparison_tables(pd.read_csv(d / "layer_scores.tsv", sep="\t"), pd.read_csv(d / "sweep.tsv", sep="\t"),
                             "m", causal=pd.read_csv(d / "subspaces.tsv", sep="\t"), causal_sweep=sweep)
    assert_allclose(r["data"]["iia_z"], iia)  # the sweep's, not the decoy
    assert r["data"]["iia_das"].notna().sum() == 2
    comp = r["comparison"].set_index("data_score")
    assert comp.loc["iia_z", "n_layers"] == L and comp.loc["iia_z", "data_best_layer"] == b
    assert comp.loc["iia_z", "distance_layers"] == 0 and comp.loc["npe_z", "data_best_layer"] == b
    assert comp.loc["iia_das", "n_layers"] == 2 and comp.loc["iia_das", "verdict"] == "too few layers"
    with pytest.raises(ZhuntError, match=r"^causal\.tsv: no rows at site 'input' and k=8"):
        lp.sweep_causal_scores(sweep.assign(k=4), "input", 8, "causal.tsv")
    with pytest.raises(ZhuntError, match=r"missing \['npe'\]"):
        lp.sweep_causal_scores(sweep.drop(columns="npe"), "input", 8)


def test_das_sweep_supersedes_the_cells_das_and_keeps_its_own_layers(tmp_path):
    """With layers/das.tsv (the DAS sweep, every third layer here) iia_das / npe_das come from its das rows
    at its layers only; z rows and subspaces.tsv's DAS are ignored; a planted DAS peak is found; the stage
    reads it as the optional input ``das_sweep`` and lists its layers in the figure's data."""
    L, b = 12, 6
    d = _stage_inputs(tmp_path, L=L, b=b)
    layers = np.array([0, 3, 5, 6, 9])
    iia = np.array([0.1, 0.3, 0.5, 0.8, 0.2])
    rows = []
    for sub, val in (("z", 99.0), ("das", None)):
        rows.append(pd.DataFrame({"model": "m", "layer": layers, "site": "input", "k": 8, "subspace": sub,
                                  "iia": iia if val is None else val, "npe": iia / 2 if val is None else val}))
    das = pd.concat(rows)
    das.to_csv(d / "das.tsv", sep="\t", index=False)
    r = lp.comparison_tables(pd.read_csv(d / "layer_scores.tsv", sep="\t"), pd.read_csv(d / "sweep.tsv", sep="\t"),
                             "m", causal=pd.read_csv(d / "subspaces.tsv", sep="\t"), das_sweep=das)
    got = r["data"].set_index("layer")
    assert_allclose(got.loc[layers, "iia_das"], iia) and got["iia_das"].notna().sum() == len(layers)
    assert_allclose(got.loc[layers, "npe_das"], iia / 2)
    sub = pd.read_csv(d / "subspaces.tsv", sep="\t")
    assert_allclose(got["iia_z"], sub[sub["subspace"] == "z"].set_index("layer")["iia"])  # z still from the cells
    comp = r["comparison"].set_index("data_score")
    assert comp.loc["iia_das", "data_best_layer"] == b and comp.loc["iia_das", "n_layers"] == len(layers)
    assert comp.loc["iia_das", "verdict"] == "too few layers"  # 5 < MIN_LAYERS: no outcome could be significant
    with pytest.raises(ZhuntError, match=r"^das\.tsv: no das rows at site 'input' and k=8"):
        lp.das_sweep_scores(das[das["subspace"] == "z"], "input", 8, "das.tsv")
    with pytest.raises(ZhuntError, match=r"missing \['subspace'\]"):
        lp.das_sweep_scores(das.drop(columns="subspace"), "input", 8)
    # the stage: optional inputs as Snakemake gives them ([path] or [])
    table = lambda n: [str(tmp_path / f"s{n}.tsv"), str(tmp_path / f"s{n}.md")]  # noqa: E731
    outputs = {"comparison": table("comparison"), "correlations": table("correlations"),
               "verdict": str(tmp_path / "sverdict.md"), "fig": [str(tmp_path / "sfig.pdf"), str(tmp_path / "sfig.png")]}
    inputs = {"scores": str(d / "layer_scores.tsv"), "sweep": str(d / "sweep.tsv"), "das_sweep": [str(d / "das.tsv")],
              "causal": []}
    run_layer_comparison(inputs, {"site": "input"}, outputs, wildcards={"model": "m"})
    c = pd.read_csv(tmp_path / "scomparison.tsv", sep="\t").set_index("data_score")
    assert c.loc["iia_das", "data_best_layer"] == b and "iia_z" not in c.index


def test_comparison_bad_inputs(tmp_path):
    d = _stage_inputs(tmp_path)
    (d / "layer_scores.tsv").rename(d / "kept.tsv")
    with pytest.raises(ZhuntError, match="layer_scores.tsv: missing"):
        _compare(d, tmp_path, prefix="a")
    (d / "kept.tsv").rename(d / "layer_scores.tsv")
    s = pd.read_csv(d / "sweep.tsv", sep="\t")
    s[s["pooling"] == "last"].to_csv(d / "sweep.tsv", sep="\t", index=False)
    with pytest.raises(ZhuntError, match="pooling 'mean'"):
        _compare(d, tmp_path, prefix="b")
    assert not list(tmp_path.glob("[ab]comparison.tsv"))


def test_caption_states_the_thresholds():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "workflow/report"
    text = (root / "layer_comparison.rst").read_text()
    for value in (f"p ≤ {lp.ALPHA}", f"≤ {lp.PREDICT_FRAC:.2f} of depth", f"≤ {lp.NEAR_FRAC}",
                  f"below {lp.MIN_LAYERS} compared layers"):
        assert value in text, value


def test_summary_pages_show_the_layer_columns_and_the_seed_reference(tmp_path):
    import json

    from zhunt.report.summary import headline, measured, model_files, write_models_summary

    (tmp_path / "in").mkdir()
    d = _stage_inputs(tmp_path / "in")
    res = tmp_path / "results" / "m" / "layers"
    res.mkdir(parents=True)
    _compare(d, res, causal=False, fig=tmp_path / "fig")
    head = headline(model_files(tmp_path / "results", "m"), "m")
    assert head["layer_verdict"] == "predicts" and head["layer_data_best"] == 5
    assert measured("layer_comparison", "m", tmp_path / "results").startswith("predicts: predicted L5")
    (tmp_path / "m.json").write_text(json.dumps(head))
    write_models_summary([tmp_path / "m.json"], tmp_path / "models.html", tmp_path / "models.tsv")
    t = pd.read_csv(tmp_path / "models.tsv", sep="\t")
    assert list(t["model"]) == ["m", "Qwen2.5-3B (seed, quoted)"] and t["bottleneck_layer"].iloc[1] == 33
    html = (tmp_path / "models.html").read_text()
    assert "weights predict the layer?" in html and "Qwen2.5-3B (seed, quoted)" in html
