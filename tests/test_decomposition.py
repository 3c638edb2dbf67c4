"""Tests for zhunt.activations.decomposition (Exp. B): R(l) = ||P_Z Δh̄|| / ||P_Z⊥ Δh̄|| against random subspaces."""

import numpy as np
import pandas as pd
import pytest

from zhunt.activations import decomposition as D
from zhunt.calibration.generators import paired_updates
from zhunt.errors import ZhuntError
from zhunt.subspace import project, project_complement, random_subspace

d, k = 64, 8


def test_norms_in_subspace_match_projectors():
    rng = np.random.default_rng(0)
    U = rng.normal(size=(10, d))
    V = random_subspace(k, d, 1)
    nz, npp = D.norms_in_subspace(U, V)
    np.testing.assert_allclose(nz, np.linalg.norm(project(U, V), axis=1), atol=1e-10)
    np.testing.assert_allclose(npp, np.linalg.norm(project_complement(U, V), axis=1), atol=1e-10)
    stack = np.stack([V, random_subspace(k, d, 2)])
    nz2, np2 = D.norms_in_subspace(U, stack)
    assert nz2.shape == (2, 10)
    np.testing.assert_allclose(nz2[0], nz)
    np.testing.assert_allclose(np2[0], npp)


def test_isotropic_updates_match_random_expectation():
    rng = np.random.default_rng(3)
    U = rng.normal(size=(400, d))
    V = random_subspace(k, d, 11)
    df = D.decompose([U], ["en"] * 200 + ["zh"] * 200, V, n_random=100, seed=0)
    row = df[df["lang"] == "all"].iloc[0]
    iso = D.iso_expected(k, d)
    assert row["iso_expected"] == pytest.approx(np.sqrt(k / (d - k)))
    assert row["rand_mean"] == pytest.approx(iso, rel=0.1)
    assert row["R"] == pytest.approx(iso, rel=0.1)
    assert row["rand_q025"] < row["rand_mean"] < row["rand_q975"]
    assert row["label"] == "mixed"
    assert row["R_of_means"] == pytest.approx(row["mean_norm_z"] / row["mean_norm_perp"])


def test_labels_and_language_difference():
    rng = np.random.default_rng(4)
    V = random_subspace(k, d, 5)
    inside = rng.normal(size=(30, k)) @ V * 3.0 + 0.1 * rng.normal(size=(30, d))  # mostly in Z
    outside = project_complement(rng.normal(size=(30, d)), V)                     # no Z at all
    iso = rng.normal(size=(30, d))
    langs = ["zh"] * 30 + ["en"] * 30
    df = D.decompose([np.vstack([inside, iso]), np.vstack([outside, outside]), np.vstack([iso, iso])],
                     langs, V, n_random=100, seed=1)
    lab = {(r["layer"], r["lang"]): r["label"] for _, r in df.iterrows()}
    assert lab[(0, "zh")] == "Z-dominated"
    assert lab[(0, "en")] == "mixed"
    assert lab[(1, "all")] == "Z⊥-dominated"
    assert lab[(0, "zh-en")] == "zh higher"
    assert lab[(1, "zh-en")] == "no difference"
    assert set(df["lang"]) == {"zh", "en", "all", "zh-en"}
    assert list(df[df["lang"] == "all"]["transition"]) == ["0->1", "1->2", "2->3"]
    # same seed, same numbers
    again = D.decompose([np.vstack([inside, iso]), np.vstack([outside, outside]), np.vstack([iso, iso])],
                        langs, V, n_random=100, seed=1)
    pd.testing.assert_frame_equal(again, df)
    # one layer alone: same R and raw p, Holm over one test only
    one = D.decompose([np.vstack([inside, iso])], langs, V, n_random=100, seed=1)
    pd.testing.assert_frame_equal(one.drop(columns=["p_holm"]),
                                  df[df["layer"] == 0].reset_index(drop=True).drop(columns=["p_holm"]))


def test_run_decomposition_stage(tmp_path):
    from zhunt.weights.masks import write_masks
    from zhunt.data.store import StoreWriter

    rng = np.random.default_rng(0)
    L, n_prompts, T = 3, 6, 4
    hidden = [rng.normal(size=(n_prompts * T, d)).astype(np.float32) for _ in range(L + 1)]
    meta = pd.DataFrame({"prompt_id": [f"p{i // 2}" for i in range(n_prompts)],
                         "lang": ["en", "zh"] * (n_prompts // 2), "length": [T] * n_prompts})
    tok = np.arange(n_prompts * T) % 50
    special = np.zeros(n_prompts * T, bool)
    special[::T] = True  # a BOS per prompt: excluded from pooling
    with StoreWriter(tmp_path / "s.h5", num_layers=L, hidden_size=d, n_rows_total=n_prompts * T) as w:
        w.append(meta, hidden, tok, special)
    Vs = {4: random_subspace(4, d, 0), 8: random_subspace(8, d, 0)}
    write_masks(tmp_path / "m.h5", {"multihead": {"sigma": np.ones(d), "V": Vs}}, {"layer": 2})
    from zhunt.data.store import ActivationStore

    with ActivationStore(tmp_path / "s.h5") as st:
        df = D.decomposition(st, Vs, 2, n_random=20)
    assert len(df) == 2 * L * 4  # k x layers x (en, zh, all, zh-en)
    assert list(df["k"].unique()) == [4, 8] and (df["basis_layer"] == 2).all() and (df["hidden_index"] == 2).all()
    assert sorted(df.loc[(df["k"] == 4) & (df["lang"] == "all"), "layer"]) == list(range(L))
    # the stage's R equals a direct computation on the pooled (special-excluded) updates
    keep = ~special
    upd = []
    for i in range(n_prompts):
        sl = slice(i * T, (i + 1) * T)
        upd.append(hidden[2][sl][keep[sl]].mean(0) - hidden[1][sl][keep[sl]].mean(0))
    nz, npp = D.norms_in_subspace(np.array(upd), Vs[8])
    got = df[(df["k"] == 8) & (df["layer"] == 1) & (df["lang"] == "all")]["R"].iloc[0]
    assert got == pytest.approx(np.mean(nz / npp), rel=1e-5)  # the store holds float32
    # the rule's stage writes the same table at the paths the rule names
    from zhunt.stages.decomposition import run_decomposition as stage

    outs = {"table": [tmp_path / "o" / "R.tsv", tmp_path / "o" / "R.md"],
            "fig": [tmp_path / "o" / "R_fig.pdf", tmp_path / "o" / "R_fig.png"]}
    stage({"store": str(tmp_path / "s.h5"), "mask": str(tmp_path / "m.h5")},
          {"ks": [4, 8], "n_random": 20, "site": "input"}, outs, wildcards={"model": "toy"})
    from zhunt.io import write_table

    write_table(df, tmp_path / "r.tsv")
    assert (tmp_path / "o" / "R.tsv").read_bytes() == (tmp_path / "r.tsv").read_bytes()
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == ["R.md", "R.tsv", "R_fig.pdf", "R_fig.png"]
    assert "Z of decoder layer 2" in (tmp_path / "o" / "R.md").read_text()


def test_zh_en_pairs_need_every_problem_in_both_languages():
    rng = np.random.default_rng(3)
    V = random_subspace(k, d, 5)
    U = rng.normal(size=(5, d))
    langs = ["zh", "zh", "zh", "en", "en"]
    with pytest.raises(ZhuntError, match=r"problem 'p2' has a 'zh' prompt but no 'en' prompt"):
        D.decompose([U], langs, V, n_random=5, problem_ids=["p0", "p1", "p2", "p1", "p0"])
    with pytest.raises(ZhuntError, match=r"problem '2' has a 'zh' prompt but no 'en' prompt"):
        D.decompose([U], langs, V, n_random=5)  # positional pairing: the third zh row has no en row


# -- pooled row, zh - en permutation test (brute force), calibration --------------------------------------
def test_all_row_pools_zh_and_en_only():
    rng = np.random.default_rng(7)
    V = random_subspace(k, d, 3)
    U = rng.normal(size=(15, d))
    langs = ["en"] * 5 + ["zh"] * 5 + ["es"] * 5
    U[10:] = rng.normal(size=(5, k)) @ V * 10.0  # es prompts entirely in Z: must not move the pooled row
    df = D.decompose([U], langs, V, n_random=20, seed=0)
    row = df[df["lang"] == "all"].iloc[0]
    nz, npp = D.norms_in_subspace(U[:10], V)
    assert row["pooled"] == "zh+en" and row["n_prompts"] == 10
    assert row["R"] == pytest.approx(np.mean(nz / npp))
    assert set(df["lang"]) == {"en", "zh", "es", "all", "zh-en"}
    # without zh and en every language is pooled
    other = D.decompose([U[10:]], ["es"] * 3 + ["fr"] * 2, V, n_random=20, seed=0)
    assert other[other["lang"] == "all"]["pooled"].iloc[0] == "es+fr"


def test_zh_en_permutation_p_matches_brute_force():
    import itertools

    rng = np.random.default_rng(8)
    V = random_subspace(k, d, 4)
    n = 9
    U = rng.normal(size=(2 * n, d))
    U[:n] += 0.6 * rng.normal(size=(n, k)) @ V
    langs = ["zh"] * n + ["en"] * n
    ids = [f"p{i}" for i in range(n)] + [f"p{i}" for i in reversed(range(n))]  # en rows in another order
    df = D.decompose([U, U[::-1]], langs, V, n_random=20, seed=0, problem_ids=ids)
    nz, npp = D.norms_in_subspace(U, V)
    r = nz / npp
    diff = r[:n] - r[n:][::-1]  # zh_i - en_i, en rows re-ordered by problem
    T = diff.mean()
    null = np.array([np.mean(np.array(sg) * diff) for sg in itertools.product([1, -1], repeat=n)])
    p = np.mean(np.abs(null) >= abs(T) - 1e-12)
    row = df[(df["lang"] == "zh-en") & (df["layer"] == 0)].iloc[0]
    assert row["R"] == pytest.approx(T) and row["n_pairs"] == n
    assert row["p_perm"] == pytest.approx(p, abs=1e-12)
    from statsmodels.stats.multitest import multipletests

    ps = df[df["lang"] == "zh-en"]["p_perm"].to_numpy()
    np.testing.assert_allclose(df[df["lang"] == "zh-en"]["p_holm"], multipletests(ps, method="holm")[1])


N_SEEDS = 40


def test_zh_en_null_calibration():
    """Exchangeable languages: each layer's label is 'no difference' in >= 95% of (seed, layer) verdicts.

    Holm bounds the family-wise rate (any of the 4 layers called different) by ALPHA = 0.05 in expectation,
    so over 40 seeds the all-clean rate is asserted with the binomial slack of that design point (>= 90%).
    """
    V = random_subspace(k, d, 6)
    n, layers = 12, 4
    clean, per_layer = 0, 0
    for seed in range(N_SEEDS):
        rng = np.random.default_rng(500 + seed)
        df = D.decompose(paired_updates(rng, n, layers, d), ["zh"] * n + ["en"] * n, V, n_random=20, seed=seed)
        ok = df[df["lang"] == "zh-en"]["label"] == "no difference"
        clean += bool(ok.all())
        per_layer += int(ok.sum())
    assert per_layer / (N_SEEDS * layers) >= 0.95
    assert clean / N_SEEDS >= 0.90


# The planted zh excess (-> 'zh higher') and the Z-dominated label's null and planted inputs:
# tests/test_calibration.py (cases exp_b_zh_en, exp_b_zdominated, exp_b_phases; the same generators).
