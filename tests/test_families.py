"""Aligned vs raw weight-family cosines (seed 002): Procrustes on planted data, phases, seed JSONs."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy.stats import ortho_group

from zhunt.calibration.generators import CAL_SHAPES, family_layers
from zhunt.weights.families import (DELTA_ZERO, FAMILIES, RESIDUAL_AXIS, aligned_cos, compare_layers, compare_pair,
                            family_matrices, gaussian_baseline, hypothesis_verdict,
                            null_table, phase_means, phase_of, raw_cos, seed_jsons,
                            shuffled_delta)




@pytest.fixture(scope="module")
def tiny_qwen2(make_tiny_qwen2_folder):
    """A random-init 8-layer Qwen2 saved as a prepared zhunt folder."""
    return make_tiny_qwen2_folder(8, seed=0)


# -- phases ----------------------------------------------------------------------------------------
def test_phase_tables():
    assert [phase_of(L, 64) for L in (0, 6, 7, 9, 10, 31, 32, 46, 47, 58, 59, 63)] == \
        ["A", "A", "B", "B", "C", "C", "D", "D", "E", "E", "tail", "tail"]
    assert [phase_of(L, 36) for L in (0, 6, 7, 9, 10, 23, 24, 33, 34, 35)] == \
        ["A", "A", "B", "B", "C", "C", "D", "D", "tail", "tail"]
    # fractional: 100 layers -> boundaries at 11, 15, 50, 75, 92
    assert [phase_of(L, 100) for L in (10, 11, 14, 15, 49, 50, 74, 75, 91, 92)] == \
        ["A", "B", "B", "C", "C", "D", "D", "E", "E", "tail"]
    assert [phase_of(L, 18) for L in range(17)] == list("AABCCCCCCDDDDDEEE")


# -- cosines and Procrustes ------------------------------------------------------------------------
def test_raw_cos_definition():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    assert raw_cos(A, B) == pytest.approx(np.dot(A.ravel(), B.ravel()) / np.linalg.norm(A) / np.linalg.norm(B))
    assert raw_cos(A, 3 * A) == pytest.approx(1.0)
    assert raw_cos(A, np.zeros_like(A)) == 0.0


@pytest.mark.parametrize("axis", [0, 1])
def test_aligned_cos_matches_explicit_rotation(axis):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((20, 12)), rng.standard_normal((20, 12))
    cos, R = aligned_cos(A, B, axis=axis, return_rotation=True)
    n = R.shape[0]
    assert_allclose(R @ R.T, np.eye(n), atol=1e-12)
    rotated = A @ R if axis == 1 else R @ A
    den = np.linalg.norm(A) * np.linalg.norm(B)
    assert cos == pytest.approx(np.sum(rotated * B) / den, abs=1e-12)
    # the optimum is the nuclear norm of the cross product ...
    cross = A.T @ B if axis == 1 else A @ B.T
    assert cos == pytest.approx(np.linalg.svd(cross, compute_uv=False).sum() / den, abs=1e-12)
    # ... and no random rotation (nor the identity) beats it
    for Rr in ortho_group.rvs(n, size=200, random_state=2):
        other = A @ Rr if axis == 1 else Rr @ A
        assert np.sum(other * B) / den <= cos + 1e-12
    assert cos >= raw_cos(A, B)
    # the path without the rotation (singular values only) gives the same cosine
    assert_allclose(aligned_cos(A, B, axis=axis), cos, rtol=1e-12)


def _planted_layers(n_layers=3, seed=0, side="residual"):
    """Layers that are one fixed set of matrices rotated by a fresh orthogonal matrix on one side."""
    rng = np.random.default_rng(seed)
    d, n_attn, d_ff = 16, 24, 40
    base = {"q_proj": (n_attn, d), "k_proj": (n_attn // 2, d), "v_proj": (n_attn // 2, d),
            "o_proj": (d, n_attn), "gate_proj": (d_ff, d), "up_proj": (d_ff, d), "down_proj": (d, d_ff)}
    base = {f: rng.standard_normal(s) for f, s in base.items()}
    layers = []
    for L in range(n_layers):
        mats = {}
        for f, W in base.items():
            ax = RESIDUAL_AXIS[f] if side == "residual" else 1 - RESIDUAL_AXIS[f]
            R = ortho_group.rvs(W.shape[ax], random_state=100 * seed + L + 7)
            mats[f] = W @ R if ax == 1 else R @ W
        layers.append(mats)
    return layers


def test_planted_rotation_residual_side():
    layers = _planted_layers()
    df = compare_layers(layers, side="residual")
    assert len(df) == 2 * len(FAMILIES)
    assert_allclose(df["aligned_cos"], 1.0, atol=1e-6)
    assert (df["raw_cos"].abs() < 0.3).all()
    assert (df["delta"] > 0.7).all()
    # the inner side cannot undo a residual-side rotation
    inner = compare_layers(layers, side="inner")
    assert (inner["aligned_cos"] < 0.99).all()


def test_planted_rotation_inner_side():
    layers = _planted_layers(side="inner", seed=1)
    res = compare_pair(layers[0], layers[1], side="inner")
    for fam, (raw, ali) in res.items():
        assert ali == pytest.approx(1.0, abs=1e-6), fam
        assert abs(raw) < 0.3, fam
    with pytest.raises(ValueError):
        compare_pair(layers[0], layers[1], side="both")


def test_family_matrices_are_module_weights(tiny_qwen2):
    from zhunt.models import get_adapter

    _, model = tiny_qwen2
    ad = get_adapter(model)
    mats = family_matrices(ad.layer_weights(3))
    mod = ad.layers[3]
    for fam in FAMILIES:
        lin = getattr(mod.self_attn, fam, None) or getattr(mod.mlp, fam)
        assert_allclose(mats[fam], lin.weight.detach().double().numpy(), atol=0)


# -- phases, verdict, seed JSONs -------------------------------------------------------------------
def _fake_by_phase(delta_c, delta_e, other=0.0):
    rows = []
    for ph, v in (("A", other), ("C", delta_c), ("D", other), ("E", delta_e)):
        rows.append({"phase": ph, "n_pairs": 2, **{f: v for f in FAMILIES}})
    return pd.DataFrame(rows)


def _fake_nulls(excess):
    return pd.DataFrame([{"family": f, "excess": e} for f, e in zip(FAMILIES, excess)],
                        columns=["family", "excess"])


def test_hypothesis_verdict():
    v = hypothesis_verdict(_fake_nulls([0.01] * 7), _fake_by_phase(0.01, 0.02))
    assert v["real_specialization"] is True and v["training_artifact"] is False
    assert v["label"] == "real-specialization" and v["late_over_middle"] is False
    v = hypothesis_verdict(_fake_nulls([0.3] * 4 + [0.0] * 3), _fake_by_phase(0.10, 0.30))
    assert v["training_artifact"] is True and v["real_specialization"] is False
    assert v["label"] == "training-artifact" and v["n_lifted"] == 4
    assert v["late_over_middle"] is True and v["n_e_over_c"] == 7
    assert v["e_minus_c"]["q_proj"] == pytest.approx(0.2)
    assert hypothesis_verdict(_fake_nulls([0.3] * 3 + [0.0] * 4))["label"] == "neither"
    assert hypothesis_verdict(_fake_nulls([DELTA_ZERO] * 7))["label"] == "real-specialization"  # strict >
    no_e = _fake_by_phase(0.3, 0.3).query("phase != 'E'")
    assert hypothesis_verdict(_fake_nulls([0.0] * 7), no_e)["late_over_middle"] is None
    assert hypothesis_verdict(_fake_nulls([]))["label"] == "untestable"
    assert str(DELTA_ZERO) in hypothesis_verdict(_fake_nulls([0.0] * 7))["criteria"]


def _seed_style_reader(null_path, aligned_path):
    """Independent reader of the seed-002 inputs: rebuild {family: {L: (raw, aligned)}} and phase deltas."""
    with open(null_path) as fh:
        null = json.load(fh)
    with open(aligned_path) as fh:
        ali = json.load(fh)
    n_layers = ali["num_layers"]
    raw = {}
    for entry in null["pair_results"]:
        for fam, vals in entry["families"].items():
            raw.setdefault(fam, {})[entry["L"]] = vals["cos"]
    pairs = {}
    for fam, per_layer in ali["aligned_cos"].items():
        for key, cos in per_layer.items():
            layer = int(key)
            if layer in raw.get(fam, {}):
                pairs.setdefault(fam, {})[layer] = (raw[fam][layer], cos)
    by_phase = {}
    for fam, per_layer in pairs.items():
        for layer, (r, a) in per_layer.items():
            by_phase.setdefault(phase_of(layer, n_layers), {}).setdefault(fam, []).append(a - r)
    return n_layers, pairs, {ph: {f: float(np.mean(v)) for f, v in d.items()} for ph, d in by_phase.items()}


def test_seed_jsons_parse_with_independent_reader(tmp_path):
    rng = np.random.default_rng(3)
    layers = [{f: rng.standard_normal((6, 5)) for f in FAMILIES} for _ in range(8)]
    df = compare_layers(layers, num_layers=8)
    null, ali = seed_jsons(df, 8, model="toy")
    assert set(null) >= {"num_layers", "pair_results"} and set(ali) >= {"num_layers", "aligned_cos"}
    assert all(isinstance(k, str) for k in ali["aligned_cos"]["q_proj"])
    assert null["pair_results"][0].keys() >= {"L", "L_next", "families"}
    (tmp_path / "toy-null.json").write_text(json.dumps(null))
    (tmp_path / "toy-aligned.json").write_text(json.dumps(ali))
    n_layers, pairs, by_phase = _seed_style_reader(tmp_path / "toy-null.json", tmp_path / "toy-aligned.json")
    assert n_layers == 8
    assert sorted(pairs["q_proj"]) == list(range(7)) and set(pairs) == set(FAMILIES)
    for r in df.itertuples():
        assert pairs[r.family][r.L] == pytest.approx((r.raw_cos, r.aligned_cos))
    ours = phase_means(df).set_index("phase")
    for ph, fams in by_phase.items():
        for f, v in fams.items():
            assert ours.loc[ph, f] == pytest.approx(v)
    assert list(ours.index) == ["A", "B", "C", "D", "E"]  # 8 layers: pairs 0..6 cover A..E


def test_gaussian_baseline_is_seeded_and_sane():
    shapes = {"q_proj": (64, 16), "o_proj": (16, 64)}
    a, b = gaussian_baseline(shapes, quantity="aligned"), gaussian_baseline(shapes, quantity="aligned")
    assert a == b
    # tall matrix aligned on the short side: of order sqrt(m / n) = 0.5
    assert 0.25 < a["q_proj"] < 0.75 and 0.25 < a["o_proj"] < 0.75
    # delta = aligned - raw, and the raw cosine of independent matrices is ~0
    dl = gaussian_baseline(shapes)
    assert all(abs(dl[f] - a[f]) < 0.05 for f in shapes)
    # brute force: the mean over explicit draws with the documented seeds
    rng = [np.random.default_rng([0, FAMILIES.index("q_proj"), r]) for r in range(3)]
    pairs = [(g.standard_normal((64, 16)), g.standard_normal((64, 16))) for g in rng]
    want = np.mean([aligned_cos(A, B, axis=1) - raw_cos(A, B) for A, B in pairs])
    assert gaussian_baseline({"q_proj": (64, 16)}, n_draws=3)["q_proj"] == pytest.approx(want, abs=1e-12)
    # planted shared structure beats the structureless null
    planted = compare_layers(_planted_layers(n_layers=2, seed=4))
    nulls = null_table(planted, gaussian_baseline({f: m.shape for f, m in _planted_layers(1)[0].items()}))
    # (k/v are 12 x 16 here: wider than tall, so even unrelated matrices align to ~0.95 and the room is small)
    tall = nulls.set_index("family").drop(["k_proj", "v_proj"])
    assert (nulls["excess"] > 0.03).all() and (tall["excess_gaussian"] > 0.1).all() and (tall["excess"] > 0.1).all()


def test_shuffled_null_keeps_spectra():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((12, 5)), rng.standard_normal((12, 5))
    for axis in (0, 1):
        g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
        d = shuffled_delta(A, B, axis, g1)
        Bs = B[g2.permutation(12)] if axis == 1 else B[:, g2.permutation(5)]
        assert_allclose(np.linalg.svd(Bs, compute_uv=False), np.linalg.svd(B, compute_uv=False))
        assert d == pytest.approx(aligned_cos(A, Bs, axis=axis) - raw_cos(A, Bs), abs=1e-12)
    # a pair that is one matrix up to a rotation loses its agreement once rows are shuffled
    R = ortho_group.rvs(5, random_state=1)
    assert aligned_cos(A, A @ R) == pytest.approx(1.0)
    assert shuffled_delta(A, A @ R, 1, np.random.default_rng(5)) < 0.9


# -- calibration ---------------------------------------------------------------------------------
# Structureless layers (Gaussian or flat spectra) -> real-specialization and planted rotations ->
# training-artifact over seeds: tests/test_calibration.py (cases families_gaussian, families_flat).
def test_flat_layers_look_lifted_against_the_gaussian_null():
    """Why the verdict reads delta against the shuffled null: structureless flat-spectrum layers exceed the
    Gaussian null of the same shapes in a majority of families in every seed, yet are not lifted against
    the shuffled pairs."""
    for seed in range(10):
        layers = family_layers("flat", seed)
        df = compare_layers(layers, num_layers=len(layers))
        nulls = null_table(df, gaussian_baseline(CAL_SHAPES))
        assert (nulls["excess_gaussian"] > DELTA_ZERO).sum() > len(nulls) / 2
        assert hypothesis_verdict(nulls, phase_means(df))["label"] == "real-specialization"


# -- end to end on a tiny model folder ---------------------------------------------------------
def test_run_families_tiny(tiny_qwen2, tmp_path):
    folder, _ = tiny_qwen2
    from zhunt.stages.weights import run_weight_families

    out, figs = tmp_path / "structure", tmp_path / "figures"
    names = {"table": "families.tsv", "table_md": "families.md", "by_phase": "families_by_phase.tsv",
             "by_phase_md": "families_by_phase.md", "verdict": "families_verdict.md",
             "verdict_tsv": "families_verdict.tsv", "null_json": "tiny-null.json",
             "aligned_json": "tiny-aligned.json"}
    outputs = {key: str(out / name) for key, name in names.items()}
    outputs["fig"] = [str(figs / "families_by_phase.pdf"), str(figs / "families_by_phase.png")]
    run_weight_families({"model": str(folder)}, {"side": "residual"}, outputs, wildcards={"model": "tiny"})
    assert {p.name for p in out.iterdir()} == set(names.values())  # exactly the rule's outputs
    assert {p.name for p in figs.iterdir()} == {"families_by_phase.pdf", "families_by_phase.png"}
    df = pd.read_csv(tmp_path / "structure/families.tsv", sep="\t")
    assert list(df.columns) == ["L", "L_next", "phase", "family", "raw_cos", "aligned_cos", "delta",
                                "null_delta"]
    assert len(df) == 7 * len(FAMILIES)
    assert (df["delta"] >= -1e-6).all()
    # a random-init model has no shared structure between layers: the null label
    vt = pd.read_csv(tmp_path / "structure/families_verdict.tsv", sep="\t")
    assert list(vt["family"]) == list(FAMILIES) and set(vt["verdict"]) == {"real-specialization"}
    assert str(DELTA_ZERO) in vt.loc[0, "criteria"]
    assert_allclose(vt["excess"], vt["mean_delta"] - vt["null_delta_shuffled"], atol=1e-5)  # TSV: 6 digits
    n_layers, pairs, _ = _seed_style_reader(tmp_path / "structure/tiny-null.json",
                                            tmp_path / "structure/tiny-aligned.json")
    assert n_layers == 8 and len(pairs["down_proj"]) == 7
    assert "**Verdict: real-specialization**" in (tmp_path / "structure/families_verdict.md").read_text()
