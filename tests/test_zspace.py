"""Phase 2 Z-projection and the data-driven language subspace on planted synthetic activations.

The synthetic store (d = 24, 3 decoder layers) plants, per prompt token,

    x = p_i + o_lang + e

with ``p_i`` the problem vector in a shared 4-dim subspace S (rows 0..3 of a fixed random
rotation Q), ``o_lang`` a language offset in a 3-dim language subspace (rows 4..6, inside S⊥)
and ``e`` token noise in rows 4.. (also inside S⊥), plus a BOS special token of norm ~100 that
pooling must ignore. So with Z = S every cross-lingual delta lies in Z⊥ exactly (up to float32
storage): ratio_Z ~ 0, E_lang(Z) ~ 0.
"""

import itertools

import h5py
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from zhunt.errors import ZhuntError
from zhunt.weights.masks import load_layer_masks, write_masks
from zhunt.data.store import ActivationStore, StoreWriter
from zhunt.subspace import grassmann_similarity, random_subspace
from zhunt.activations.zspace import (PairDeltas, datadriven, language_means, language_subspace, paired_pooled,
                                      percentile_of, phase2, phase2_ratio, random_baseline, subspace_metrics)
from zhunt.stages import zspace as stage

D, L, K = 24, 3, 4
LANGS = ("zh", "en", "es", "fr")
Q = np.linalg.qr(np.random.default_rng(123).standard_normal((D, D)))[0].T  # rows: orthonormal basis
S = Q[:K]            # planted shared (problem) subspace
LANG_SUB = Q[4:7]    # planted language subspace, inside S-perp
NOISE = Q[4:]        # token noise lives in S-perp


def write_store(path, n_problems=12, langs=LANGS, drop=(), noise=0.3, lang_scale=5.0, seed=0):
    """Planted store; ``drop`` = (prompt_id, lang) pairs to leave out."""
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((n_problems, K)) * 3.0 @ S
    # language offsets: vertices of a regular tetrahedron in the language subspace (well conditioned)
    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) * lang_scale / np.sqrt(3)
    O = {lang: tetra[LANGS.index(lang)] @ LANG_SUB for lang in langs}
    meta, rows, tok, special = [], [[] for _ in range(L + 1)], [], []
    for i in range(n_problems):
        for lang in langs:
            if (f"p{i:02d}", lang) in set(drop):
                continue
            T = 3 + (i + len(lang)) % 3
            meta.append({"prompt_id": f"p{i:02d}", "lang": lang, "length": T + 1})
            for j in range(L + 1):
                bos = rng.standard_normal(D) * 100 / np.sqrt(D)
                toks = P[i] + O[lang] + (1 + 0.1 * j) * noise * rng.standard_normal((T, NOISE.shape[0])) @ NOISE
                rows[j].append(np.vstack([bos, toks]))
            tok += [2] + list(rng.integers(10, 90, T))
            special += [True] + [False] * T
    n = len(tok)
    with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=n, attrs={"model": "planted"}) as w:
        w.append(meta, [np.concatenate(r) for r in rows], np.array(tok), np.array(special))
    return path


def write_planted_masks(path, layer, ks=(4, 8)):
    rng = np.random.default_rng(layer)
    mh = {k: np.vstack([S, Q[12:12 + k - K]]) for k in ks}  # Z = S (+ noise directions for k > 4)
    h0 = {k: random_subspace(k, D, rng) for k in ks}          # head-0 mask: unrelated subspace
    sig = np.linspace(2, 1, D)
    write_masks(path, {"multihead": {"sigma": sig, "V": mh}, "head0": {"sigma": sig, "V": h0}},
                {"layer": layer, "model": "planted"})
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zspace")
    store = write_store(tmp / "acts.h5")
    masks = {l: write_planted_masks(tmp / f"L{l}.h5", l) for l in (1, 2)}
    return tmp, store, masks


def measure(fn, store_path, mask_paths, layers, ks, kinds=("multihead", "head0"), **kw):
    """``fn`` (:func:`phase2` or :func:`datadriven`) on the open store with the masks of the sweep."""
    with ActivationStore(store_path) as st:
        masks = load_layer_masks(mask_paths, layers, kinds, ks, st.hidden_size)
        return fn(st, masks, layers, ks, kinds=kinds, **kw)


@pytest.fixture
def no_numerals(monkeypatch):
    """The stages' numeral ids without a tokenizer: none (the numeral-free rows equal the others)."""
    monkeypatch.setattr(stage, "store_numeral_ids", lambda model, store: np.zeros(0, dtype=np.int64))


def run_stage(rule, tmp, tag, store_path, mask_paths, layers=(1,), ks=(4,), kinds=("multihead", "head0"),
              n_random=20):
    """Rule ``phase2`` or ``datadriven_z`` through its stage, outputs ``{tmp}/{tag}*``."""
    layers = list(layers)
    inputs = {"store": str(store_path), "masks": [str(mask_paths[l]) for l in layers if l in mask_paths],
              "model": "no-tokenizer"}
    params = {"layers": layers, "ks": list(ks), "kinds": list(kinds), "n_random": n_random, "site": "input",
              "site_variants": []}
    outs = {"table": [tmp / f"{tag}.tsv", tmp / f"{tag}.md"], "fig": [tmp / f"{tag}_fig.pdf", tmp / f"{tag}_fig.png"]}
    if rule == "phase2":
        outs.update(summary=[tmp / f"{tag}s.tsv", tmp / f"{tag}s.md"], digit=tmp / f"{tag}_digit.tsv")
        stage.run_phase2(inputs, params, outs, wildcards={"model": "planted"})
    else:
        outs.update(basis=tmp / f"{tag}_ms.h5")
        stage.run_datadriven_z(inputs, params, outs, wildcards={"model": "planted"})
    return outs


# ------------------------------------------------------------------------------ definitions
def test_ratio_brute_force():
    rng = np.random.default_rng(0)
    N, d, k = 6, 10, 3
    Xa, Xb = rng.standard_normal((N, d)), rng.standard_normal((N, d))
    V = random_subspace(k, d, 1)
    P = V.T @ V
    for proj in (None, P, np.eye(d) - P):
        M = np.eye(d) if proj is None else proj
        num = np.mean([np.linalg.norm(M @ (Xa[i] - Xb[i])) for i in range(N)])
        den = [np.linalg.norm(M @ (X[i] - X[j])) for X in (Xa, Xb) for i in range(N) for j in range(N) if i != j]
        expect = num / np.mean(den)
        got = phase2_ratio(Xa, Xb, None if proj is None else V, complement=proj is not None and proj is not P)
        assert_allclose(got, expect, rtol=1e-12)
    D_ = PairDeltas(Xa, Xb)
    m = subspace_metrics(D_, V)
    assert_allclose(m["ratio_S"], phase2_ratio(Xa, Xb, V), rtol=1e-12)
    assert_allclose(m["ratio_perp"], phase2_ratio(Xa, Xb, V, complement=True), rtol=1e-12)
    e = sum(np.sum((P @ (Xa[i] - Xb[i])) ** 2) for i in range(N)) / sum(np.sum((Xa[i] - Xb[i]) ** 2) for i in range(N))
    assert_allclose(m["E_lang"], e, rtol=1e-12)
    w = [X[i] - X[j] for X in (Xa, Xb) for i, j in itertools.combinations(range(N), 2)]
    assert_allclose(m["E_prob"], sum(np.sum((P @ x) ** 2) for x in w) / sum(np.sum(x**2) for x in w), rtol=1e-12)
    # the random-baseline route (delta-span coordinates) agrees with direct projection
    c2, w2 = D_.sq_norms_in(V)
    assert_allclose(c2, np.sum(((Xa - Xb) @ V.T) ** 2, axis=1), rtol=1e-10, atol=1e-12)
    rb = random_baseline(D_, k, draws=[V])
    assert_allclose([rb["ratio"][0], rb["ratio_perp"][0], rb["E_lang"][0], rb["E_prob"][0]],
                    [m["ratio_S"], m["ratio_perp"], m["E_lang"], m["E_prob"]], rtol=1e-9)
    assert percentile_of(0.5, np.array([0.0, 0.5, 1.0, 2.0])) == 37.5


def test_planted_Z_separates(planted):
    _, store_path, _ = planted
    with ActivationStore(store_path) as st:
        for pooling in ("mean", "last"):
            Xa, Xb, ids = paired_pooled(st, 2, ("zh", "en"), pooling)
            assert ids == [f"p{i:02d}" for i in range(12)]
            Dl = PairDeltas(Xa, Xb)
            m = subspace_metrics(Dl, S)
            assert m["E_lang"] == pytest.approx(0.0, abs=1e-6)
            assert m["ratio_S"] < 1e-3 < 1.0 < m["ratio_perp"]
            assert m["E_prob"] > 0.8  # problem identity lives in Z
            rb = random_baseline(Dl, K, n_random=200, seed=0)
            # Haar subspaces: energy k/d on average, ratio ~ that of the full space
            assert rb["E_lang"].mean() == pytest.approx(K / D, rel=0.15)
            assert rb["E_prob"].mean() == pytest.approx(K / D, rel=0.15)
            assert rb["ratio"].mean() == pytest.approx(Dl.ratio_full, rel=0.15)
            assert percentile_of(m["ratio_S"], rb["ratio"]) == 0.0
            # fixed seed: identical draws
            assert_allclose(random_baseline(Dl, K, n_random=200, seed=0)["ratio"], rb["ratio"])


def test_phase2(planted):
    tmp, store_path, masks = planted
    res = measure(phase2, store_path, masks, [1, 2], [4, 8], n_random=100, seed=0)
    full = res.table
    assert len(full) == 2 * 2 * 2 * 2 * 2  # (input site + embedding reference) x layers x k x kinds x poolings
    assert set(full["tokens"]) == {"all"} and res.digit.empty  # no numeral ids given
    assert_allclose(full.loc[full["site"] == "input", "hidden_index"], full.loc[full["site"] == "input", "layer"])
    assert (full.loc[full["site"] == "embedding", "hidden_index"] == 0).all()
    t = full[full["site"] == "input"]
    for col in ("site", "hidden_index", "layer", "k", "kind", "pooling", "ratio_Z", "ratio_Zperp", "ratio_rand_mean", "ratio_rand_lo",
                "ratio_rand_hi", "ratio_Z_percentile", "E_lang_Z", "E_lang_rand_mean", "E_lang_rand_lo",
                "E_lang_rand_hi", "E_lang_chance", "E_lang_Z_over_chance", "E_prob_Z", "E_prob_rand_mean",
                "E_prob_rand_lo", "E_prob_rand_hi", "E_prob_Z_over_chance", "Z_better"):
        assert col in t.columns, col
    mh = t[t["kind"] == "multihead"]
    assert mh["Z_better"].all()
    assert (mh[mh["k"] == K]["E_lang_Z"] < 1e-6).all() and (mh["E_lang_side"] == "below").all()
    assert (mh["ratio_Z_percentile"] == 0).all()
    assert (mh["E_lang_over_prob_side"] == "below").all()
    assert (t["E_lang_over_prob_rand_lo"] < 1).all() and (t["E_lang_over_prob_rand_hi"] > 1).all()
    assert_allclose(t["E_lang_chance"], t["k"] / D)
    s = res.summary
    s = s[s["site"] == "input"]
    top = s[(s["layer"] == "all") & (s["kind"] == "all")].set_index("pooling")
    assert set(top.index) == {"mean", "last"}
    assert (top["n_configs"] == 8).all() and (top["n_Z_better"] >= 4).all()
    assert (top["best_kind"] == "multihead").all()
    per = s[(s["layer"] != "all") & (s["kind"] == "multihead")]
    assert per["vanish_k"].isna().all()  # E_lang(Z) stays below random at every k of the sweep
    assert per["vanish_k_spec"].isna().all()


def test_phase2_stage_writes_the_rule_outputs(planted, no_numerals):
    tmp, store_path, masks = planted
    outs = run_stage("phase2", tmp, "p2", store_path, masks, layers=(1, 2), ks=(4, 8))
    for f in ("p2.tsv", "p2.md", "p2s.tsv", "p2s.md", "p2_fig.pdf", "p2_fig.png", "p2_digit.tsv"):
        assert (tmp / f).is_file()
    back = pd.read_csv(tmp / "p2.tsv", sep="\t")
    # numeral-free rows (here: no numerals) next to every row of the plain sweep
    assert len(back) == 2 * (2 * 2 * 2 * 2 * 2) and set(back["tokens"]) == {"all", "no_numerals"}
    plain = measure(phase2, store_path, masks, [1, 2], [4, 8], n_random=20).table
    assert_allclose(back[back["tokens"] == "all"]["ratio_Z"], plain["ratio_Z"], rtol=1e-5)
    assert "ratio_Z < ratio_Z⊥ in" in (tmp / "p2s.md").read_text()
    assert sorted(outs) == ["digit", "fig", "summary", "table"]


def test_language_subspace_recovers_planted(planted):
    _, store_path, _ = planted
    with ActivationStore(store_path) as st:
        for pooling in ("last", "mean"):
            means, langs = language_means(st, 2, pooling)
            assert langs == list(LANGS)
            sub = language_subspace(means)
            assert sub["M_s"].shape == (3, D)
            assert grassmann_similarity(sub["M_s"], LANG_SUB) > 0.99
            # at r = n_lang - 1 the LSAR refinement keeps span(M_s)
            assert grassmann_similarity(sub["M_s"], sub["M_s_svd"]) > 1 - 1e-9
    # r < n_lang - 1: the refined subspace is orthogonal to the refined agnostic vector
    means = np.random.default_rng(5).standard_normal((5, D)) + 3.0
    sub = language_subspace(means, rank=2)
    assert_allclose(sub["M_s"] @ sub["agnostic"], 0.0, atol=1e-9)
    assert_allclose(sub["M_s"] @ sub["M_s"].T, np.eye(2), atol=1e-12)


def test_datadriven(planted):
    tmp, store_path, masks = planted
    t = measure(datadriven, store_path, masks, [1, 2], [4, 8], kinds=("multihead", "head0"), seed=0, n_random=50)
    assert len(t) == 2 * 2 * 2 * 2
    assert (t["site"] == "input").all() and (t["hidden_index"] == t["layer"]).all()
    assert (t["r"] == 3).all() and (t["n_languages"] == 4).all()
    assert (t["ratio_Msperp"] < t["ratio_Ms"]).all()
    assert (t["ratio_Msperp_cv"] < t["ratio_Ms_cv"]).all()
    assert (t["E_lang_Ms"] > 0.9).all() and (t["E_lang_Ms_over_chance"] > 5).all()
    mh4 = t[(t["kind"] == "multihead") & (t["k"] == 4)]
    assert (mh4["cos_max"] < 0.05).all() and (mh4["E_Ms_in_Z"] < 0.01).all()  # Z = S is orthogonal to M_s
    assert ((t["cos_mean"] >= 0) & (t["cos_max"] <= 1 + 1e-12)).all()
    assert (t["cos_mean_rand_lo"] <= t["cos_mean_rand_hi"]).all()
    assert_allclose(t["lsar_vs_svd_similarity"], 1.0, atol=1e-9)


def test_datadriven_stage_writes_the_rule_outputs(planted):
    tmp, store_path, masks = planted
    run_stage("datadriven_z", tmp, "dd", store_path, masks, layers=(1, 2), ks=(4, 8), n_random=50)
    for f in ("dd.tsv", "dd.md", "dd_fig.pdf", "dd_fig.png", "dd_ms.h5"):
        assert (tmp / f).is_file()
    back = pd.read_csv(tmp / "dd.tsv", sep="\t")
    t = measure(datadriven, store_path, masks, [1, 2], [4, 8], kinds=("multihead",), n_random=50)
    assert_allclose(back["ratio_Ms"], t["ratio_Ms"], rtol=1e-5)


# ------------------------------------------------------------------------------ bad input
WHERE = {"layers": "models.planted.study.phase2_layers", "ks": "models.planted.study.phase2_k"}


def _p2(tmp, store, masks, layers=(1,), ks=(4,), **kw):
    return run_stage("phase2", tmp, "e", store, masks, layers, ks, **kw)


def test_bad_layer_and_k(planted, no_numerals):
    tmp, store_path, masks = planted
    with pytest.raises(ZhuntError, match=r"^models\.planted\.study\.phase2_layers: layer 3 is outside 0\.\.2"):
        _p2(tmp, store_path, {**masks, 3: masks[1]}, layers=(1, 3))
    with pytest.raises(ZhuntError, match=r"^models\.planted\.study\.phase2_k: k=24 must satisfy 0 < k < d=24"):
        _p2(tmp, store_path, masks, ks=(4, 24))
    with pytest.raises(ZhuntError, match=r"^models\.planted\.study\.phase2_k: k=24"):
        run_stage("datadriven_z", tmp, "e2", store_path, masks, ks=(24,))
    with pytest.raises(ZhuntError, match="no Z-mask file given for layer 2"):
        _p2(tmp, store_path, {1: masks[1]}, layers=(1, 2))
    with pytest.raises(ZhuntError, match="mask file is for layer 2"):
        _p2(tmp, store_path, {1: masks[2]})
    with pytest.raises(ZhuntError, match="unknown kind 'head7'"):
        _p2(tmp, store_path, masks, kinds=("head7",))
    with pytest.raises(ZhuntError, match=r"no mask multihead/k5"):
        _p2(tmp, store_path, masks, ks=(5,))
    assert not (tmp / "e.tsv").exists()


def test_missing_language_and_empty(planted, tmp_path, no_numerals):
    _, _, masks = planted
    store = write_store(tmp_path / "gap.h5", n_problems=4, langs=("zh", "en"), drop=[("p02", "zh")])
    with pytest.raises(ZhuntError, match=r"gap\.h5: problem 'p02' has a 'en' prompt but no 'zh' prompt"):
        _p2(tmp_path, store, masks)
    only_en = write_store(tmp_path / "en.h5", n_problems=4, langs=("en", "es"))
    with pytest.raises(ZhuntError, match="language 'zh' has no prompts"):
        _p2(tmp_path, only_en, masks)
    one = write_store(tmp_path / "one.h5", n_problems=1, langs=("zh", "en"))
    with pytest.raises(ZhuntError, match="need at least 2 problems"):
        _p2(tmp_path, one, masks)
    with pytest.raises(ZhuntError, match="need at least 2 problems"):
        run_stage("datadriven_z", tmp_path, "dd", one, masks)


def test_mask_width_mismatch(planted, tmp_path, no_numerals):
    _, store_path, _ = planted
    bad = tmp_path / "L1.h5"
    write_masks(bad, {"multihead": {"sigma": np.ones(D + 1), "V": {4: random_subspace(4, D + 1, 0)}}}, {"layer": 1})
    with pytest.raises(ZhuntError, match=r"has shape \(4, 25\), expected \(4, 24\)"):
        _p2(tmp_path, store_path, {1: bad}, kinds=("multihead",))
    with h5py.File(bad, "r") as f:
        assert f.attrs["layer"] == 1
