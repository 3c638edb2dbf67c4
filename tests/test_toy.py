"""Tests for zhunt.experiments.toy: Theorem 1 of seed 003 (shared bilingual linear map)."""

import numpy as np
import pandas as pd
import pytest

from zhunt.experiments import toy


def test_agreement_ratio_bounds():
    z1 = np.array([1.0, 1.0, 1.0, 2.0])
    z2 = np.array([1.0, -1.0, 0.0, 2.0])
    rho = toy.agreement_ratio(z1, z2, 0.5, 0.5)
    np.testing.assert_allclose(rho, [1.0, 0.0, 0.5, 1.0])
    p = toy.make_problem(n=20, seed=3)
    assert np.all((p.rho >= 0) & (p.rho <= 1 + 1e-12))
    np.testing.assert_allclose(p.power, 1.0)  # normalised input power per direction


def test_sample_has_exact_moments():
    p = toy.make_problem(n=6, a1=0.6, seed=1)
    X, S, lang = toy.sample_data(p, n_samples=500, seed=2)
    assert X.shape == (500, 6) and (lang == 1).sum() == 300
    for l, z in ((1, p.z1), (2, p.z2)):
        Sl = S[lang == l]
        np.testing.assert_allclose(Sl.T @ Sl / len(Sl), np.diag(p.lam), atol=1e-10)
        np.testing.assert_allclose(X[lang == l], (Sl * z) @ p.Q.T, atol=1e-12)
    # the sample least-squares optimum is exactly the population optimum W*
    W_ls = np.linalg.lstsq(X, S, rcond=None)[0].T
    np.testing.assert_allclose(W_ls, toy.optimal_map(p), atol=1e-10)


def test_trained_singular_values_match_sqrt_rho():
    p = toy.make_problem(n=10, a1=0.7, seed=0)
    X, S, _ = toy.sample_data(p, n_samples=2000, seed=1)
    W, info = toy.train_shared_map(X, S)
    assert info["converged"]
    df = toy.compare_spectrum(W, p)
    assert df.loc[df["counted"], "rel_err"].max() < 1e-3
    assert df["rho"].min() < 0.3  # the problem really contains disagreeing directions


def test_general_prediction_without_power_normalisation():
    p = toy.make_problem(n=8, a1=0.3, seed=4, normalise_power=False)
    assert np.ptp(p.power) > 0.1
    X, S, _ = toy.sample_data(p, n_samples=1000, seed=5)
    W, info = toy.train_shared_map(X, S)
    df = toy.compare_spectrum(W, p)
    assert df["rel_err_general"].max() < 1e-6  # sigma_i = sqrt(rho_i / q_i) always holds


def test_toy_theorem():
    res = toy.toy_theorem(seed=0)
    assert res["rel_error_max"] < 1e-3 and res["converged"]
    assert res["right_vector_alignment"] > 1 - 1e-6
    assert {"sigma_norm", "sqrt_rho_norm", "rel_err", "z1", "z2"} <= set(res["table"].columns)
    assert sorted(res["table"]["direction"]) == list(range(12))
    again = toy.toy_theorem(seed=0)
    assert again["rel_error_max"] == res["rel_error_max"]  # seeded: identical


def test_run_toy_theorem_stage(tmp_path):
    from zhunt.stages.toy import run_toy_theorem

    outputs = {"table": [str(tmp_path / "toy.tsv"), str(tmp_path / "toy.md")],
               "fig": [str(tmp_path / "fig" / "toy.pdf"), str(tmp_path / "fig" / "toy.png")]}
    run_toy_theorem({}, {}, outputs)
    t = pd.read_csv(tmp_path / "toy.tsv", sep="\t")
    np.testing.assert_allclose(t["rel_err"], toy.toy_theorem(seed=0)["table"]["rel_err"], rtol=1e-5)
    assert (tmp_path / "toy.md").read_text().split("|")[1].strip() == "rank"
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"toy.pdf", "toy.png"}


def test_problem_basis_is_the_haar_generator():
    """The mixing basis Q is zhunt.subspace.random_subspace(n, n) drawn after the gains (same stream)."""
    from zhunt.subspace import random_subspace

    p = toy.make_problem(n=5, a1=0.6, seed=3)
    rng = np.random.default_rng(3)
    rng.uniform(0.5, 1.5, 5), rng.permutation(5), rng.uniform(0, 1, 5)
    np.testing.assert_array_equal(p.Q, random_subspace(5, 5, rng).T)
    np.testing.assert_allclose(p.Q.T @ p.Q, np.eye(5), atol=1e-12)


def test_bad_parameters():
    with pytest.raises(ValueError):
        toy.make_problem(n=1)
    p = toy.make_problem(n=4, a1=0.7)
    with pytest.raises(ValueError):
        toy.sample_data(p, n_samples=101)
