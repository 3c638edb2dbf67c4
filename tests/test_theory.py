"""Tests for the seed-003 analyses (zhunt.activations.theory and its parts: paired, snr, contributions,
alignment, crossmap, cointegration, garch): quantities on planted synthetic activations."""

import itertools

import h5py
import numpy as np
import pandas as pd
import pytest

from zhunt.activations import alignment, cointegration, contributions, crossmap, garch, paired, snr, theory
from zhunt.calibration.generators import adjusting_pair, iid_series, random_walks
from zhunt.errors import ZhuntError
from zhunt.data.store import ActivationStore, StoreWriter

L, D, N, K_SHARED = 4, 24, 16, 6
CATS = ["add", "sub", "mul", "div"]



def theory_outputs(out, fig):
    """The theory rule's named outputs, with its file names, under ``out`` (tables) and ``fig`` (figures)."""
    tables = {"snr": "snr", "summary": "theory_summary", "nn": "nn_retrieval", "depth": "alignment_depth",
              "crossmap": "crossmap"}
    o = {k: [out / f"{v}.tsv", out / f"{v}.md"] for k, v in tables.items()}
    o.update(gram=out / "contrib_gram.tsv", coint=out / "cointegration.tsv")
    o.update({f"fig_{k}": [fig / f"{v}.pdf", fig / f"{v}.png"]
              for k, v in (("snr", "snr"), ("nn", "nn_accuracy"), ("gram", "contrib_gram"), ("crossmap", "crossmap"))})
    return o

def load(path, **kw) -> "paired.PairedStates":
    """:func:`paired.load_paired` of a store file."""
    with ActivationStore(path) as st:
        return paired.load_paired(st, **kw)


def theory_of(store_path, numeral_ids=None, **kw):
    """:func:`theory.theory` on a store file (its numeral-free states too when ``numeral_ids`` is given)."""
    with ActivationStore(store_path) as st:
        P = paired.load_paired(st)
        P_nonum = paired.load_paired(st, exclude_ids=numeral_ids) if numeral_ids is not None else None
    return theory.theory(P, P_nonum, **kw)


def planted_states(langs=("en", "zh"), seed=0, same=False):
    """Pooled-state-like array (K, L+1, N, D) with a planted structure.

    Problem identity lives in a shared K_SHARED-dim subspace (its coordinates
    grow with depth); each language adds a fixed offset plus small noise in the
    complement, shrinking with depth.  ``same=True`` makes every language identical.
    """
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    S, C = Q[:, :K_SHARED].T, Q[:, K_SHARED:].T  # (k, D), (D-k, D)
    ident = rng.standard_normal((N, K_SHARED)) * 3.0
    H = np.empty((len(langs), L + 1, N, D))
    offsets = {l: rng.standard_normal(D - K_SHARED) * 2.0 for l in langs}
    for k, l in enumerate(langs):
        for j in range(L + 1):
            lang_part = offsets[l] + 0.5 * rng.standard_normal((N, D - K_SHARED))
            if same:
                lang_part = offsets[langs[0]] + 0 * lang_part
            H[k, j] = (1 + j) * ident @ S + (1.0 / (1 + j)) * lang_part @ C
    if same:
        H[:] = H[0]
    return H


def write_store(path, H, langs=("en", "zh"), drop=None, tokens=3):
    """Write H (K, L+1, N, D) as a store in which every token of a prompt equals its pooled state.

    Row 0 of each prompt is a special token holding garbage (excluded from pooling).
    ``drop`` = (problem index, lang) leaves that prompt out.
    """
    rng = np.random.default_rng(1)
    meta, hid = [], [[] for _ in range(L + 1)]
    tok, spec = [], []
    for i in range(N):
        for k, l in enumerate(langs):
            if drop == (i, l):
                continue
            meta.append({"prompt_id": f"p{i:02d}", "lang": l, "length": tokens + 1, "answer": str(i),
                         "category": CATS[i % len(CATS)]})
            for j in range(L + 1):
                hid[j].append(np.vstack([1e3 * rng.standard_normal((1, D)), np.repeat(H[k, j, i][None], tokens, 0)]))
            tok.extend([1] + [5] * tokens)
            spec.extend([True] + [False] * tokens)
    n = len(tok)
    with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=n) as w:
        w.append(pd.DataFrame(meta), [np.vstack(h) for h in hid], np.array(tok), np.array(spec))
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    langs = ("en", "zh", "es")
    H = planted_states(langs)
    path = write_store(tmp_path_factory.mktemp("store") / "s.h5", H, langs)
    return path, H, langs


# --------------------------------------------------------------------------- loading / errors
def test_load_paired_matches_planted(planted):
    path, H, langs = planted
    P = load(path)
    assert P.langs == list(langs) and P.problems == [f"p{i:02d}" for i in range(N)]
    assert P.H.shape == (3, L + 1, N, D)
    np.testing.assert_allclose(P.H, H, rtol=1e-5, atol=1e-4)  # special row excluded from the mean
    assert list(P.category[:4]) == CATS
    np.testing.assert_allclose(P.updates("zh"), H[1, 1:] - H[1, :-1], rtol=1e-4, atol=1e-3)


def test_missing_language_is_one_line_error(tmp_path):
    path = write_store(tmp_path / "m.h5", planted_states(), drop=(3, "zh"))
    with pytest.raises(ZhuntError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg and "p03" in msg and "zh" in msg


def test_empty_store_is_one_line_error(tmp_path):
    path = tmp_path / "empty.h5"
    s = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "zhunt-activations", "format_version": 1, "num_layers": L,
                        "hidden_size": D, "dtype": "float32", "n_rows": 0, "n_prompts": 0})
        for j in range(L + 1):
            f.create_dataset(f"hidden/{j:03d}", shape=(0, D), dtype=np.float32)
        ix = f.create_group("index")
        ix.create_dataset("prompt_id", shape=(0,), dtype=s)
        ix.create_dataset("lang", shape=(0,), dtype=s)
        for name in ("offset", "length"):
            ix.create_dataset(name, shape=(0,), dtype=np.int64)
        ix.create_dataset("token_ids", shape=(0,), dtype=np.int32)
        ix.create_dataset("special", shape=(0,), dtype=bool)
    with pytest.raises(ZhuntError) as e:
        load(path)
    assert "\n" not in str(e.value) and "no prompts" in str(e.value)
    with pytest.raises(ZhuntError, match="missing.h5"):
        run_theory_stage(tmp_path / "missing.h5", tmp_path / "o", tmp_path / "f")


def test_single_language_is_error(tmp_path):
    path = write_store(tmp_path / "one.h5", planted_states(("en",)), langs=("en",))
    with pytest.raises(ZhuntError, match="at least 2 languages"):
        load(path)


# --------------------------------------------------------------------------- SNR / Theorem 2
def test_snr_against_brute_force():
    H = planted_states(seed=3)
    A, B = H[0], H[1]
    df = snr.snr_profile(A, B)
    for j in range(L + 1):
        same = np.mean([np.sum((A[j, i] - B[j, i]) ** 2) for i in range(N)])
        diff = []
        for X in (A[j], B[j]):
            diff.append(np.mean([np.sum((X[i] - X[k]) ** 2)
                                 for i, k in itertools.product(range(N), repeat=2) if i != k]))
        assert df["D_same"][j] == pytest.approx(same, rel=1e-10)
        assert df["D_diff"][j] == pytest.approx(np.mean(diff), rel=1e-10)
        assert df["SNR"][j] == pytest.approx(same / np.mean(diff), rel=1e-10)
    # planted: languages converge through depth
    assert snr.monotonicity(df["SNR"])["monotone"]
    assert snr.monotonicity(df["SNR"])["spearman"] == pytest.approx(-1.0)


def test_theorem2_exact_decomposition_and_condition():
    H = planted_states(seed=4)
    df = snr.snr_profile(H[0], H[1])
    for j in range(L):
        # D(j+1) = D(j) + increment + cross term, exactly
        assert df["D_same"][j + 1] == pytest.approx(df["D_same"][j] + df["E_delta2"][j] + df["cross_same"][j], rel=1e-9)
        assert df["D_diff"][j + 1] == pytest.approx(df["D_diff"][j] + df["sigma2"][j] + df["cross_diff"][j], rel=1e-9)
        assert bool(df["condition_holds"][j]) == bool(df["delta_ratio"][j] < df["SNR"][j])
    assert pd.isna(df["condition_holds"].iloc[-1]) and pd.isna(df["snr_decreases_next"].iloc[-1])
    # with orthogonal increments (cross terms zero) the condition is exactly the SNR change
    rng = np.random.default_rng(0)
    Nq, Dq = 40, 30
    A0, B0 = rng.standard_normal((Nq, Dq)), rng.standard_normal((Nq, Dq))
    A1 = np.zeros((2, Nq, Dq + 30)); B1 = np.zeros_like(A1)
    A1[0, :, :Dq], B1[0, :, :Dq] = A0, B0
    A1[1], B1[1] = A1[0], B1[0]
    A1[1, :, Dq:] = rng.standard_normal((Nq, 30))  # increment in an orthogonal block, centred-free
    B1[1, :, Dq:] = A1[1, :, Dq:] + 0.1 * rng.standard_normal((Nq, 30))
    A1[1, :, Dq:] -= A1[1, :, Dq:].mean(0); B1[1, :, Dq:] -= B1[1, :, Dq:].mean(0)
    d2 = snr.snr_profile(A1, B1)
    assert abs(d2["cross_same"][0]) < 1e-9 and abs(d2["cross_diff"][0]) < 1e-9
    assert bool(d2["agree"][0])


def test_monotonicity_counts_violations():
    m = snr.monotonicity([3, 2, 2.5, 1, 1])
    assert m["violations"] == 2 and not m["monotone"]


# --------------------------------------------------------------------------- contributions
def test_gram_and_cross_terms_vs_explicit():
    rng = np.random.default_rng(5)
    Lq, M, Dq = 5, 7, 9
    F = rng.standard_normal((Lq, M, Dq))
    G = contributions.contribution_gram(F)
    Ge = np.zeros((Lq, Lq))
    for m in range(M):
        for j in range(Lq):
            for k in range(Lq):
                Ge[j, k] += abs(F[j, m] @ F[k, m] / np.linalg.norm(F[j, m]) / np.linalg.norm(F[k, m])) / M
    np.testing.assert_allclose(G, Ge, rtol=1e-12)
    off = Ge[~np.eye(Lq, dtype=bool)]
    assert contributions.offdiag_stats(G) == pytest.approx((off.mean(), off.max()))
    delta = rng.standard_normal((Lq, M, Dq))
    cross = sum(2 * delta[j, i] @ delta[k, i] for i in range(M) for j in range(Lq) for k in range(j + 1, Lq))
    total = sum(np.sum(delta[:, i].sum(0) ** 2) for i in range(M))
    assert contributions.cross_term_fraction(delta) == pytest.approx(cross / total, rel=1e-10)
    # orthogonal per-layer differences: no cross terms
    E = np.zeros((3, 2, 3))
    for j in range(3):
        E[j, :, j] = [1.0, 2.0]
    assert contributions.cross_term_fraction(E) == pytest.approx(0.0, abs=1e-15)
    assert contributions.offdiag_stats(contributions.contribution_gram(E)) == pytest.approx((0.0, 0.0))


def test_disagreement_ratio_definition():
    H = planted_states(seed=6)
    df = snr.snr_profile(H[0], H[1])
    Fa, Fb = H[0, 1:] - H[0, :-1], H[1, 1:] - H[1, :-1]
    for j in range(L):
        num = np.mean(np.sum((Fa[j] - Fb[j]) ** 2, 1))
        den = 0.5 * (np.mean(np.sum(Fa[j] ** 2, 1)) + np.mean(np.sum(Fb[j] ** 2, 1)))
        assert df["disagreement_ratio"][j] == pytest.approx(np.sqrt(num / den))


# --------------------------------------------------------------------------- retrieval
def test_nn_identical_languages_is_perfect(tmp_path):
    H = planted_states(("en", "zh"), same=True)
    P = paired.PairedStates(H=H, langs=["en", "zh"], problems=[f"p{i}" for i in range(N)],
                            category=np.array(["c"] * N, dtype=object), prompt_length=np.ones((2, N)))
    nn = alignment.nn_retrieval_table(P)
    assert (nn["accuracy"] == 1.0).all()
    assert set(nn["space"]) == {"h", "update"} and nn[nn.space == "update"]["j"].min() == 1
    ld = alignment.alignment_depth_languages(nn, P.langs, threshold=0.9)
    assert (ld["L_star"] == 0).sum() == 2  # both languages, space h
    assert alignment.nn_accuracy(H[0, 2], np.roll(H[1, 2], 1, axis=0)) == 0.0


def test_alignment_depth_problems():
    c = np.array([[1, 0, 0, 1],
                  [0, 1, 0, 1],
                  [1, 1, 0, 0],
                  [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(alignment.alignment_depth_problems(c), [2, 1, 3, 3])
    c[-1, 2] = False
    assert alignment.alignment_depth_problems(c)[2] == 4  # wrong at the last index: never (= J)


def test_depth_vs_category_and_length():
    tab, H, p = alignment.depth_vs_category([1, 1, 2, 5, 6, 5], ["a", "a", "a", "b", "b", "b"])
    assert list(tab["category"]) == ["a", "b"] and tab["mean_L_star"][1] == pytest.approx(16 / 3)
    assert 0 < p < 0.1
    assert np.isnan(alignment.depth_vs_category([2, 2, 2], ["a", "b", "b"])[2])
    rho, p, n = alignment.depth_vs_length([1, 2, 3, 4, np.nan], [10, 20, 30, 40, 50])
    assert rho == pytest.approx(1.0) and n == 4


# --------------------------------------------------------------------------- cross-lingual maps
def test_procrustes_recovers_rotated_copy():
    rng = np.random.default_rng(7)
    Nq, Dq = 40, 24
    X = rng.standard_normal((Nq, Dq)) * np.linspace(5, 0.2, Dq) + 3.0
    Q, _ = np.linalg.qr(rng.standard_normal((Dq, Dq)))
    Y = X @ Q.T + 1.0
    res = crossmap.crossmap_heldout(X, Y, pca_dim=8, n_folds=5, seed=0)
    assert res["r"] == 8
    assert res["procrustes_r2_heldout"] == pytest.approx(1.0, abs=1e-8)
    assert res["affine_r2_heldout"] == pytest.approx(1.0, abs=1e-8)
    assert res["affine_kappa"] == pytest.approx(1.0, abs=1e-6)
    # a scaled, sheared copy: affine still exact, Procrustes is not
    A = np.diag(np.linspace(0.3, 3, Dq))
    res2 = crossmap.crossmap_heldout(X, X @ A, pca_dim=Dq, n_folds=5)
    assert res2["affine_r2_heldout"] == pytest.approx(1.0, abs=1e-8)
    assert res2["procrustes_r2_heldout"] < 0.99 and res2["affine_kappa"] > 5
    # unrelated target: nothing generalises
    res3 = crossmap.crossmap_heldout(X, rng.standard_normal((Nq, Dq)), pca_dim=8, n_folds=5)
    assert res3["affine_r2_heldout"] < 0.2


def test_crossmap_table_matches_single_calls(planted):
    path, H, langs = planted
    P = load(path)
    cm = crossmap.crossmap_table(P, pca_dim=5, n_folds=4, seed=1)
    assert len(cm) == (L + 1) * 6
    one = crossmap.crossmap_heldout(P.states("zh")[2], P.states("en")[2], pca_dim=5, n_folds=4, seed=1)
    got = cm[(cm.j == 2) & (cm.src == "zh") & (cm.tgt == "en")].iloc[0]
    for k in ("procrustes_r2_heldout", "affine_r2_heldout", "affine_kappa"):
        assert got[k] == pytest.approx(one[k], rel=1e-9)


# --------------------------------------------------------------------------- cointegration
def test_johansen_finds_planted_cointegration():
    rng = np.random.default_rng(8)
    T = 300
    x = np.cumsum(rng.standard_normal(T))
    y = 2.0 * x + rng.standard_normal(T)
    res = cointegration.johansen_rank(np.c_[x, y])
    assert res["rank"] == 1 and res["error"] == "" and res["crit_sim"].shape == (2,)


def test_vecm_alpha_one_language_adjusts():
    """Planted: only y (language b) error-corrects. Pi from statsmodels' rank-1 VECM matches an
    unrestricted OLS fit of the VECM equations (independent computation) within 0.05, the |alpha|
    ratio is small and the label names b."""
    Y = adjusting_pair()
    res = cointegration.johansen_rank(Y)
    assert res["rank"] == 1
    fit = cointegration.vecm_alpha(Y, 1, n_a=1)
    # OLS: dY_t on [Y_{t-1}, dY_{t-1}, 1]
    dY = np.diff(Y, axis=0)
    X = np.c_[Y[1:-1], dY[:-1], np.ones(len(dY) - 1)]
    coef = np.linalg.lstsq(X, dY[1:], rcond=None)[0]
    np.testing.assert_allclose(fit["Pi"], coef[:2].T, atol=0.05)
    np.testing.assert_allclose(fit["Pi"], [[0.0, 0.0], [0.4, -0.4]], atol=0.08)  # planted Pi
    assert fit["alpha_ratio"] < 1 / cointegration.ALPHA_RATIO_THRESHOLD
    np.testing.assert_allclose(fit["alpha_ratio"], np.linalg.norm(fit["alpha"][:1]) / np.linalg.norm(fit["alpha"][1:]),
                               rtol=1e-10)  # rank 1: ratio of Pi rows = ratio of alpha blocks
    assert cointegration.cointegration_verdict(res["rank"], fit["alpha_ratio"], 2, "zh", "en") == "en adjusts"
    # swap the columns: the other language adjusts
    fit2 = cointegration.vecm_alpha(Y[:, ::-1], 1, n_a=1)
    np.testing.assert_allclose(fit2["alpha_ratio"], 1 / fit["alpha_ratio"], rtol=1e-6)
    assert cointegration.cointegration_verdict(1, fit2["alpha_ratio"], 2, "zh", "en") == "zh adjusts"
    assert cointegration.cointegration_verdict(1, 1.2, 2, "zh", "en") == "both adjust"
    assert cointegration.cointegration_verdict(2, 1.2, 2) == "stationary"
    assert cointegration.cointegration_verdict(np.nan, 1.2, 2) == "not measured"
    assert cointegration.cointegration_verdict(1, np.inf, 2, "zh", "en") == "zh adjusts"
    assert cointegration.cointegration_verdict(1, np.nan, 2) == "cointegrated, alpha not measured"


def test_cointegration_model_verdict_planted_names_the_adjusting_language():
    """Every problem an adjusting pair (only en error-corrects): the model verdict is cointegrated, en adjusts,
    with a Wilson interval around the rate (null and planted rates: tests/test_calibration.py)."""
    ranks, ratios = [], []
    for seed in range(10):
        Y = adjusting_pair(T=300, seed=seed)
        r = cointegration.johansen_rank(Y)["rank"]
        ranks.append(r)
        ratios.append(cointegration.vecm_alpha(Y, int(r), n_a=1)["alpha_ratio"] if r >= 1 else np.nan)
    m = cointegration.cointegration_model_verdict(ranks, ratios, "zh", "en")
    assert m["verdict"] == "cointegrated" and m["adjusts"] == "en adjusts"
    assert m["lo"] < m["rate"]
    null = [cointegration.johansen_rank(random_walks(np.random.default_rng(100 + s)))["rank"] for s in range(5)]
    assert cointegration.cointegration_model_verdict(null)["n"] == 5


# --------------------------------------------------------------------------- GARCH
def test_garch_recovers_known_parameters():
    """A GARCH(1,1) series simulated by arch with known (omega, alpha, beta) is recovered within
    +-0.05 (alpha, beta) and +-50 % (omega), and called clustered."""
    omega, alpha, beta = 0.1, 0.1, 0.85
    y = garch.simulate_garch(3000, omega=omega, alpha=alpha, beta=beta, mu=1.0, seed=0)
    np.testing.assert_allclose(np.var(y), omega / (1 - alpha - beta), rtol=0.25)  # unconditional variance
    res = garch.garch_beta(y)
    assert res["status"] == "ok" and res["converged"]
    np.testing.assert_allclose([res["alpha"], res["beta"]], [alpha, beta], atol=0.05)
    np.testing.assert_allclose(res["omega"], omega, rtol=0.5)
    assert res["arch_lm_pvalue"] < 1e-6
    assert garch.garch_verdict(res) == "clustered"
    assert garch.garch_beta(y[:10])["status"].startswith("too short")
    assert garch.garch_verdict(garch.garch_beta(y[:10])) == "not fitted"


def test_garch_model_verdict_without_fits_is_not_measured():
    """(The i.i.d. null and the simulated-GARCH planted series over seeds: tests/test_calibration.py.)"""
    assert garch.garch_model_verdict(["not fitted"])["verdict"] == "not measured"
    labels = [garch.garch_verdict(garch.garch_beta(iid_series(np.random.default_rng(s)))) for s in range(3)]
    assert garch.garch_model_verdict(labels)["n_fitted"] == 3


def test_garch_table_and_stage(tmp_path):
    rng = np.random.default_rng(9)
    rows = []
    for i, beta in enumerate([0.85, 0.8]):
        y = garch.simulate_garch(800, alpha=0.1, beta=beta, seed=i)
        rows.append(pd.DataFrame({"problem": f"q{i}", "step": np.arange(len(y))[::-1], "y": y[::-1],
                                  "y_output": rng.standard_normal(len(y))}))
    rows.append(pd.DataFrame({"problem": "short", "step": range(5), "y": np.ones(5), "y_output": np.ones(5)}))
    steps = pd.concat(rows)
    out = garch.garch_table(steps)
    assert len(out) == 3 and int((out["status"] == "ok").sum()) == 2
    assert garch.garch_model_verdict(out["verdict"])["n_clustered"] == 2
    assert garch.garch_model_verdict(out["output_verdict"])["n_clustered"] == 0
    t = out.set_index("problem")
    assert t.loc["short", "status"].startswith("too short") and t.loc["short", "verdict"] == "not fitted"
    assert list(t.loc[["q0", "q1"], "verdict"]) == ["clustered"] * 2
    assert list(t.loc[["q0", "q1"], "output_verdict"]) == ["not clustered"] * 2
    # the rule's stage: the table, its Markdown and the figure at the paths the rule names
    from zhunt.stages.theory import run_garch as stage

    tsv = tmp_path / "steps.tsv"
    steps.to_csv(tsv, sep="\t", index=False)
    outs = {"table": [tmp_path / "s" / "garch.tsv", tmp_path / "s" / "garch.md"],
            "fig": [tmp_path / "s" / "beta.pdf", tmp_path / "s" / "beta.png"]}
    stage({"steps": str(tsv)}, {}, outs, wildcards={"model": "m"})
    back = pd.read_csv(tmp_path / "s" / "garch.tsv", sep="\t")
    assert list(back["verdict"]) == list(out["verdict"]) and list(back["problem"]) == list(out["problem"])
    assert "Rule: clustered" in (tmp_path / "s" / "garch.md").read_text()
    assert sorted(f.name for f in (tmp_path / "s").iterdir()) == ["beta.pdf", "beta.png", "garch.md", "garch.tsv"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ZhuntError, match="needs columns"):
        stage({"steps": str(bad)}, {}, {"table": [tmp_path / "x.tsv", tmp_path / "x.md"], "fig": outs["fig"]},
              wildcards={"model": "m"})
    assert not (tmp_path / "x.tsv").exists()


# --------------------------------------------------------------------------- stage
def run_theory_stage(store_path, out, fig, generations=None, **params):
    """Rule ``theory`` through its stage (no tokenizer: no numeral ids, so no digit-confound rows)."""
    from zhunt.stages import theory as stage

    outputs = {**theory_outputs(out, fig), "digit": out / "digit_confound.tsv"}
    params = {"nn_threshold": 0.9, "pca_dim": 5, "coint_components": 2, "site": "input", "layers": [], **params}
    inputs = {"store": str(store_path), "model": "no-tokenizer", "generations": generations}
    real = stage.store_numeral_ids
    stage.store_numeral_ids = lambda model, store: np.zeros(0, dtype=np.int64)
    try:
        stage.run_theory(inputs, params, outputs, wildcards={"model": "planted"})
    finally:
        stage.store_numeral_ids = real
    return outputs


def test_run_theory_writes_everything(planted, tmp_path):
    path, H, langs = planted
    gl = tmp_path / "generations.tsv"
    pd.DataFrame({"problem": [f"p{i:02d}" for i in range(N) for _ in range(2)],
                  "gen_length": [float(i) for i in range(N) for _ in range(2)]}).to_csv(gl, sep="\t", index=False)
    run_theory_stage(path, tmp_path / "out", tmp_path / "fig", generations=str(gl))
    out, fig = tmp_path / "out", tmp_path / "fig"
    for name in ("snr", "theory_summary", "nn_retrieval", "alignment_depth", "crossmap"):
        assert (out / f"{name}.tsv").exists() and (out / f"{name}.md").exists()
    assert (out / "contrib_gram.tsv").exists() and (out / "cointegration.tsv").exists()
    for stem in ("snr", "nn_accuracy", "contrib_gram", "crossmap"):
        assert (fig / f"{stem}.pdf").exists() and (fig / f"{stem}.png").exists()
    assert not list(out.glob(".*")) and not list(fig.glob(".*"))  # no temp files left behind
    s = pd.read_csv(out / "theory_summary.tsv", sep="\t").set_index("statistic")
    assert s.loc["snr_monotone", "value"] == 1.0 and s.loc["snr_violations", "value"] == 0
    assert "generation_length" in s.loc["L_star_length_spearman", "note"]
    snr_t = pd.read_csv(out / "snr.tsv", sep="\t")
    assert snr_t["pair"].iloc[0] == "zh-en" and set(snr_t["pair"]) == {"zh-en", "en-es", "zh-es"}
    gram = pd.read_csv(out / "contrib_gram.tsv", sep="\t")
    assert len(gram) == L * L
    ad = pd.read_csv(out / "alignment_depth.tsv", sep="\t")
    assert set(ad["kind"]) == {"language", "problem", "category"}
    co = pd.read_csv(out / "cointegration.tsv", sep="\t")
    assert len(co) == N
    assert "not time" in cointegration.COINTEGRATION_CAPTION
    with pytest.raises(ZhuntError, match="theory.nn_threshold"):
        run_theory_stage(path, tmp_path / "o2", tmp_path / "f2", nn_threshold=1.5)
    assert not (tmp_path / "o2").exists()


# --------------------------------------------------------------------------- verdict calibration
# SNR, Theorem 2, alignment depth, cross-lingual maps, cointegration and GARCH: null and planted
# calibration over seeds in tests/test_calibration.py (zhunt.calibration, the same generators).
