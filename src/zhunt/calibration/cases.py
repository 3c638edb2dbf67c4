"""Every verdict with its null and planted input: the calibration registry (issue 13, item 8).

A :class:`Case` names one verdict function, runs it on the null or the planted input of one seed
(:mod:`zhunt.calibration.generators`) and says which labels count as the null outcome and which
as the positive one. :func:`calibrate` runs a case over seeds and gives both rates with Wilson
95 % intervals (:func:`zhunt.stats.binomial_ci`). ``tests/test_calibration.py`` asserts, for every
case, a null label in >= 95 % of its seeds and the positive label on the planted input;
``bench/calibration.py`` prints the table over more seeds. Thresholds are read from the verdict's
own module (never restated here), and ``caption`` names the report captions that must show them.

Cases marked ``literal`` are rules kept for comparison next to a calibrated verdict (the seeds'
rules as written, and the seed grid's uncorrected maximum over configurations): their null rate
is the number that says why they are not the headline; the tests assert only their planted label.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from zhunt.calibration import generators as G

__all__ = ["Case", "CASES", "case", "calibrate", "label_matches"]


@dataclass(frozen=True)
class Case:
    """One verdict's calibration.

    Attributes
    ----------
    name : str
        Short id (the bench's row, the test's parameter).
    verdict : str
        Dotted name of the verdict (or label) function.
    run : callable
        ``run(kind, seed) -> label`` with ``kind`` in ``("null", "planted")``.
    null_labels, positive_labels : tuple of str
        Labels counted as the null / positive outcome (``fnmatch`` patterns).
    thresholds : callable
        ``() -> {name: value}``: the rule's constants, read from its module.
    caption : tuple of str
        Report captions (``workflow/report/*.rst``) that state the thresholds.
    n_seeds, n_planted : int
        Seeds of the null and of the planted input in the tests (a level-0.05 test needs about 100
        null seeds before ">= 95 %" is more than a coin flip around its design point).
    planted_min : float
        Least positive rate the tests ask of the planted input (below 1 where the positive label also
        needs a test *not* to reject, which it does with probability 1 - alpha at most).
    literal : bool
        The seed's rule as written, shown for comparison (not calibrated).
    """

    name: str
    verdict: str
    run: Callable[[str, int], str]
    null_labels: tuple
    positive_labels: tuple
    thresholds: Callable[[], dict] = field(default=dict)
    caption: tuple = ()
    n_seeds: int = 20
    n_planted: int = 20
    planted_min: float = 0.95
    literal: bool = False


def label_matches(label: str, patterns) -> bool:
    """``label`` matches one of the ``fnmatch`` ``patterns``."""
    return any(fnmatch.fnmatchcase(str(label), p) for p in patterns)


def calibrate(c: Case, n_seeds: int | None = None, n_planted: int | None = None, first_seed: int = 0) -> dict:
    """Run a case's null inputs over seeds ``first_seed .. first_seed + n_seeds - 1`` and its planted
    inputs over the first ``n_planted`` of them (defaults: the case's own counts).

    Returns
    -------
    dict
        ``n``, ``n_planted``, ``null_rate``, ``null_lo``, ``null_hi`` (null labels among the null inputs),
        ``pos_rate``, ``pos_lo``, ``pos_hi`` (positive labels among the planted inputs, Wilson
        95 % intervals), ``null_labels`` and ``planted_labels`` (every label, in seed order).
    """
    from zhunt.stats import binomial_ci

    n = int(n_seeds or c.n_seeds)
    n1 = int(n_planted or c.n_planted)
    null = [c.run("null", s) for s in range(first_seed, first_seed + n)]
    planted = [c.run("planted", s) for s in range(first_seed, first_seed + n1)]
    k0 = sum(label_matches(x, c.null_labels) for x in null)
    k1 = sum(label_matches(x, c.positive_labels) for x in planted)
    r0, lo0, hi0 = binomial_ci(k0, n)
    r1, lo1, hi1 = binomial_ci(k1, n1)
    return {"n": n, "n_planted": n1, "null_rate": r0, "null_lo": lo0, "null_hi": hi0, "pos_rate": r1, "pos_lo": lo1, "pos_hi": hi1,
            "null_labels": null, "planted_labels": planted}


# ============================================================================ Exp. A
def _interchange(kind, seed):
    from zhunt.experiments.patching_metrics import subspace_metrics
    from zhunt.experiments.patching_verdict import interchange_verdict

    p = (0.4, 0.4, 0.2, 0.2) if kind == "null" else (0.8, 0.3, 0.8, 0.1)
    m = subspace_metrics(G.interchange_records(np.random.default_rng(seed), 60, *p)).set_index("subspace")
    return interchange_verdict(m.loc["z"].to_dict(), m.loc["random_matched"].to_dict())[0]


def _interchange_thresholds():
    from zhunt.experiments import patching_thresholds as T

    return {"ALPHA": T.ALPHA, "MIN_IIA_GAIN": T.MIN_IIA_GAIN, "MIN_NPE_GAIN": T.MIN_NPE_GAIN,
            "MIN_PAIRS": T.MIN_PAIRS, "MIN_CEILING_IIA": T.MIN_CEILING_IIA,
            "POSITIVE_CONTROL_MIN_IIA": T.POSITIVE_CONTROL_MIN_IIA}


_GRID_PLANTED = dict(z_change=0.9, zp_change=0.05, rand_change=0.1, z_keep=0.95, zp_keep=0.1)


def _grid(kind, seed):
    from zhunt.experiments.patching import config_metrics, config_verdict

    kw = {} if kind == "null" else _GRID_PLANTED
    return config_verdict(config_metrics(G.grid_records(np.random.default_rng([11, seed]), **kw)))[0]


def _grid_overall(kind, seed, n_configs=8):
    from zhunt.experiments.patching import config_metrics, config_verdict, overall_verdict

    kw = {} if kind == "null" else _GRID_PLANTED
    rng = np.random.default_rng([12, seed])
    return overall_verdict([config_verdict(config_metrics(G.grid_records(rng, **kw)))[0] for _ in range(n_configs)])


def _grid_thresholds():
    from zhunt.experiments import patching_thresholds as T

    return {"ALPHA": T.ALPHA, "MIN_Z_LANGUAGE_PRESERVATION": T.MIN_Z_LANGUAGE_PRESERVATION,
            "MAX_ZPERP_ANSWER_CHANGE": T.MAX_ZPERP_ANSWER_CHANGE, "N_BOOTSTRAP": T.N_BOOTSTRAP}


def _donor(kind, seed):
    from zhunt.experiments.patching import donor_metrics, donor_verdict

    kw = {} if kind == "null" else dict(z_tr=0.8, zp_tr=0.05, rand_tr=0.05, z_keep=0.95, zp_keep=0.2)
    return donor_verdict(donor_metrics(G.donor_records(np.random.default_rng([13, seed]), **kw)))[0]


def _donor_thresholds():
    from zhunt.experiments import patching_thresholds as T

    return {"MIN_DONOR_Z_LANGUAGE_PRESERVATION": T.MIN_DONOR_Z_LANGUAGE_PRESERVATION, "N_BOOTSTRAP": T.N_BOOTSTRAP}


# ============================================================================ seed 003
def _states(kind, seed):
    return G.unaligned_states(seed) if kind == "null" else G.converging_states(seed)


def _snr(kind, seed):
    from zhunt.activations import snr

    H = _states(kind, seed)
    return snr.snr_verdict(snr.snr_profile(H[0], H[1])["SNR"])


def _theorem2(kind, seed):
    from zhunt.activations import snr

    H = _states(kind, seed)
    return snr.theorem2_verdict(snr.snr_profile(H[0], H[1]))


#: NN-retrieval accuracy that defines the alignment depth in the calibration (the schema's default
#: ``theory.nn_threshold``).
NN_THRESHOLD = 0.9


def _alignment(kind, seed):
    from zhunt.activations import alignment, paired

    H = _states(kind, seed)
    N = H.shape[2]
    P = paired.PairedStates(H=H, langs=["zh", "en"], problems=[f"p{i}" for i in range(N)],
                            category=np.array(["c"] * N, dtype=object), prompt_length=np.ones((2, N)))
    ld = alignment.alignment_depth_languages(alignment.nn_retrieval_table(P), P.langs, threshold=NN_THRESHOLD)
    return alignment.alignment_verdict(ld.loc[ld["space"] == "h", "L_star"].iloc[0])


def _crossmap(null_map, planted_map, pca_dim):
    def run(kind, seed):
        from zhunt.activations import crossmap

        X, Y = G.rotated_pair(np.random.default_rng(seed), map=null_map if kind == "null" else planted_map)
        r = crossmap.crossmap_heldout(X, Y, pca_dim=pca_dim, n_folds=5, seed=0)
        return crossmap.crossmap_verdict(r["procrustes_r2_heldout"], r["affine_r2_heldout"])
    return run


def _crossmap_thresholds():
    from zhunt.activations import crossmap

    return {"CROSSMAP_GAP": crossmap.CROSSMAP_GAP, "CROSSMAP_MIN_R2": crossmap.CROSSMAP_MIN_R2}


def _coint_one(Y):
    from zhunt.activations import cointegration as C

    r = C.johansen_rank(Y)["rank"]
    ratio = C.vecm_alpha(Y, int(r), n_a=1)["alpha_ratio"] if r >= 1 and r < Y.shape[1] else np.nan
    return r, ratio


def _cointegration(kind, seed):
    from zhunt.activations import cointegration as C

    Y = G.random_walks(np.random.default_rng(100 + seed)) if kind == "null" else G.adjusting_pair(seed=seed)
    r, ratio = _coint_one(Y)
    return C.cointegration_verdict(r, ratio, 2, "zh", "en")


def _cointegration_model(kind, seed, n_problems=10):
    from zhunt.activations import cointegration as C

    if kind == "null":  # random walks of Gemma's depth (19 steps) in 4 dimensions
        rng = np.random.default_rng(seed)
        ranks = [C.johansen_rank(G.random_walks(rng, 19, 4), n_sim=300)["rank"] for _ in range(n_problems)]
        return C.cointegration_model_verdict(ranks)["verdict"]
    fits = [_coint_one(G.adjusting_pair(T=300, seed=1000 * seed + i)) for i in range(n_problems)]
    return C.cointegration_model_verdict([f[0] for f in fits], [f[1] for f in fits], "zh", "en")["verdict"]


def _coint_thresholds():
    from zhunt.activations import cointegration as C

    return {"COINT_LEVEL": C.COINT_LEVEL, "COINT_MODEL_LEVEL": C.COINT_MODEL_LEVEL,
            "ALPHA_RATIO_THRESHOLD": C.ALPHA_RATIO_THRESHOLD}


#: Simulated GARCH(1,1) of the planted inputs: (omega, alpha, beta) and length.
GARCH_PLANTED = (0.1, 0.2, 0.75)
GARCH_PLANTED_STEPS = 1000


def _garch_series(kind, seed, i=0):
    from zhunt.activations.garch import simulate_garch

    if kind == "null":
        rng = np.random.default_rng([seed, i])
        return G.iid_series(rng, 100, "gaussian" if (seed + i) % 2 else "chisq")
    return simulate_garch(GARCH_PLANTED_STEPS, *GARCH_PLANTED, seed=1000 * seed + i)


def _garch(kind, seed):
    from zhunt.activations import garch

    return garch.garch_verdict(garch.garch_beta(_garch_series(kind, seed)))


def _garch_model(kind, seed, n_series=10):
    from zhunt.activations import garch

    labels = [garch.garch_verdict(garch.garch_beta(_garch_series(kind, seed, i))) for i in range(n_series)]
    return garch.garch_model_verdict(labels)["verdict"]


def _garch_thresholds():
    from zhunt.activations import garch

    return {"GARCH_LEVEL": garch.GARCH_LEVEL, "GARCH_ARCH_LM_LAGS": garch.GARCH_ARCH_LM_LAGS,
            "GARCH_MIN_STEPS": garch.GARCH_MIN_STEPS}


# ============================================================================ Exp. B
_B_D, _B_K = 64, 8


def _exp_b_basis():
    from zhunt.subspace import random_subspace

    return random_subspace(_B_K, _B_D, 6)


def _zdominated(kind, seed, n=60):
    from zhunt.activations import decomposition as D

    rng = np.random.default_rng([21, seed])
    V = _exp_b_basis()
    U = G.zdominated_updates(rng, n, _B_D, V, strength=0.0 if kind == "null" else 2.0)
    df = D.decompose([U], ["zh"] * (n // 2) + ["en"] * (n - n // 2), V, n_random=50, seed=seed)
    return str(df[df["lang"] == "all"]["label"].iloc[0])


def _zh_en(kind, seed, n=12, layers=4):
    from zhunt.activations import decomposition as D

    V = _exp_b_basis()
    rng = np.random.default_rng(500 + seed if kind == "null" else 900 + seed)
    U = G.paired_updates(rng, n, layers, _B_D, shift_layer=None if kind == "null" else 2, shift=3.0, V=V)
    df = D.decompose(U, ["zh"] * n + ["en"] * n, V, n_random=20, seed=seed)
    return str(df[df["lang"] == "zh-en"].set_index("layer")["label"][2])


def _phases(kind, seed, n=40, layers=5):
    from zhunt.activations import decomposition as D

    rng = np.random.default_rng([22, seed])
    V = _exp_b_basis()
    U = [G.zdominated_updates(rng, n, _B_D, V, strength=2.0 if (kind == "planted" and l == 2) else 0.0)
         for l in range(layers)]
    df = D.decompose(U, ["zh"] * (n // 2) + ["en"] * (n - n // 2), V, n_random=50, seed=seed)
    labels = df[df["lang"] == "all"].sort_values("layer")["label"]
    return "phases" if D.has_phases(labels) else "no phases"


def _exp_b_thresholds():
    from zhunt.activations import decomposition as D

    return {"Z_DOMINATED_ENRICHMENT": D.Z_DOMINATED_ENRICHMENT, "ALPHA": D.ALPHA}


# ============================================================================ Exp. C
_ARD_D, _ARD_SHORT = 40, 7


def _z_size(kind, seed):
    from zhunt.activations.ard import z_size

    rng = np.random.default_rng(300 + seed)
    log_ell = (G.lengthscale_spectrum(rng, _ARD_D, level=2.0 * (seed % 2)) if kind == "null"
               else G.lengthscale_spectrum(rng, _ARD_D, n_short=_ARD_SHORT))
    z = z_size(log_ell)
    return f"{z['z_rule']} |Z|={z['z_size']}"


def _ard_thresholds():
    from zhunt.activations import ard

    return {"BIMODAL_BIC_GAIN": ard.BIMODAL_BIC_GAIN, "BIMODAL_ASHMAN_D": ard.BIMODAL_ASHMAN_D,
            "LOG10_ELL_OFF": ard.LOG10_ELL_OFF}


def _heldout(kind, seed, n=8):
    from zhunt.activations.ard import heldout_tests, heldout_verdict

    rng = np.random.default_rng([31, seed])
    zh, en = G.token_clouds(rng, n, problem_scale=0.0 if kind == "null" else 1.5)
    partner = (np.arange(n) + 1 + seed % (n - 1)) % n
    res = heldout_tests(zh, en, partner, np.zeros(zh[0].shape[1]), n_permutations=200, seed=seed, device="cpu")
    return heldout_verdict(res["language"]["p_value"], res["problem"]["p_value"])


def _heldout_thresholds():
    from zhunt.activations import ard

    return {"HELDOUT_ALPHA": ard.HELDOUT_ALPHA}


# ============================================================================ seed 002, seed 004
def _families(null_kind):
    def run(kind, seed):
        from zhunt.weights.families import compare_layers, gaussian_baseline, hypothesis_verdict, null_table, phase_means

        layers = G.family_layers(null_kind if kind == "null" else "planted", seed)
        df = compare_layers(layers, num_layers=len(layers))
        return hypothesis_verdict(null_table(df, gaussian_baseline(G.CAL_SHAPES)), phase_means(df))["label"]
    return run


def _families_thresholds():
    from zhunt.weights import families

    return {"DELTA_ZERO": families.DELTA_ZERO, "E_OVER_C_MARGIN": families.E_OVER_C_MARGIN}


def _qk_factors(kind, seed):
    if kind == "null":
        return G.qk_random_layers(n_layers=6, H=4, H_kv=2, dh=8, d=32, seed=100 + seed)
    return G.qk_shared_layers(seed, 0.05)


def _qk(kind, seed):
    from zhunt.weights.qk import analyse_qk

    return analyse_qk(_qk_factors(kind, seed), topk=4)["verdict"]


def _qk_literal(kind, seed):
    from zhunt.weights.qk import analyse_qk, qk_verdict

    return qk_verdict(analyse_qk(_qk_factors(kind, seed), topk=4)["mean_cos_to_anchor"])[0]


def _qk_thresholds():
    from zhunt.weights.qk import VERDICT_BANDS

    return {label: lo for lo, label, _ in VERDICT_BANDS if np.isfinite(lo)}


# ============================================================================ layer prediction
_LP_L = 30


def _layerpred(kind, seed):
    import pandas as pd

    from zhunt.experiments import layerpred as lp

    L = _LP_L
    if kind == "null":
        rng = np.random.default_rng([17, L, seed])
        w = G.weight_profiles(L, rng)
        pred = int(np.argmin(w["attn_eff_rank_mean"]))
        data = pd.DataFrame({"layer": np.arange(L), "rel_ratio": rng.uniform(0.7, 1.1, L),
                             "ratio_Z_percentile": rng.uniform(0, 100, L),
                             "E_lang_Z_over_chance": rng.uniform(0.5, 1.5, L)})
    else:
        rng = np.random.default_rng([5, L, seed])
        pred = int(rng.integers(2, L - 2))
        w = G.weight_profiles(L, rng, dip_at=pred)
        data = pd.DataFrame({"layer": np.arange(L),
                             "rel_ratio": 0.7 + 0.1 * G.dip(np.arange(L), pred) / L + rng.normal(scale=0.01, size=L)})
        data.loc[pred, "rel_ratio"] = 0.6
    comp, _ = lp.compare_layers(w, data, pred, L)
    return str(comp.loc[comp["primary"], "verdict"].iloc[0])


def _layerpred_thresholds():
    from zhunt.experiments import layerpred as lp

    return {"ALPHA": lp.ALPHA, "PREDICT_FRAC": lp.PREDICT_FRAC, "NEAR_FRAC": lp.NEAR_FRAC, "MIN_LAYERS": lp.MIN_LAYERS}


# ============================================================================ Phase 0
def _paired_outcomes(kind, seed):
    rng = np.random.default_rng([41, seed])
    if kind == "null":
        return G.paired_correct(rng, 40, 0.5, 0.5)
    return G.paired_correct(rng, 40, p_en=0.3, p_lang=0.9, agree=0.2)


def _behaviour(kind, seed):
    from zhunt.experiments.behaviour import paired_verdict
    from zhunt.stats import mcnemar_exact

    a, b = _paired_outcomes(kind, seed)
    return paired_verdict(mcnemar_exact(a, b)["p"], int(a.sum()) - int(b.sum()))


def _behaviour_band(kind, seed):
    from zhunt.experiments.behaviour import contingency_band

    a, b = _paired_outcomes(kind, seed)
    return contingency_band(int(a.sum()) - int(b.sum()))


def _behaviour_thresholds():
    from zhunt.experiments.behaviour import PAIRED_ALPHA

    return {"PAIRED_ALPHA": PAIRED_ALPHA}


# ============================================================================ Exp. D, Phase 2
def _bridge(kind, seed):
    from zhunt.experiments.bridge import GroupStats, bridge_metrics, bridge_verdict, evaluate

    X, Y = G.bridge_pair(np.random.default_rng([51, seed]), rotation=kind == "planted")
    ev = evaluate("lstsq", GroupStats.from_rows(X, Y))
    return bridge_verdict(bridge_metrics(ev["W"])["orth_err"], ev["r2_loo"])


def _bridge_thresholds():
    from zhunt.experiments.bridge import BRIDGE_R2_OK, ORTH_TOL

    return {"ORTH_TOL": ORTH_TOL, "BRIDGE_R2_OK": BRIDGE_R2_OK}


def _phase2(kind, seed, k=6):
    from zhunt.activations.zspace import RANDOM_BAND, band_side, pair_deltas, random_baseline, subspace_metrics
    from zhunt.subspace import random_subspace

    rng = np.random.default_rng([61, seed])
    Xa, Xb, V = G.pooled_pairs(rng, k=k)
    Z = random_subspace(k, Xa.shape[1], rng) if kind == "null" else V
    D = pair_deltas(Xa, Xb)
    rb = random_baseline(D, k, n_random=100, seed=seed)
    lo, hi = np.percentile(rb["ratio"], RANDOM_BAND)
    return band_side(subspace_metrics(D, Z)["ratio_S"], lo, hi)


def _phase2_thresholds():
    from zhunt.activations.zspace import RANDOM_BAND

    return {"RANDOM_BAND_LO": RANDOM_BAND[0], "RANDOM_BAND_HI": RANDOM_BAND[1]}


# ============================================================================ the registry
_MANY = dict(n_seeds=100, n_planted=20)  # cheap cases: 100 null seeds
CASES: tuple[Case, ...] = (
    Case("exp_a_interchange", "zhunt.experiments.patching_verdict.interchange_verdict", _interchange,
         ("null",), ("causal",), _interchange_thresholds, ("patching_interchange.rst",), n_seeds=40, n_planted=10),
    Case("exp_a_grid", "zhunt.experiments.patching.config_verdict", _grid, ("null",), ("double dissociation",),
         _grid_thresholds, ("patching.rst",), **_MANY),
    Case("exp_a_grid_overall", "zhunt.experiments.patching.overall_verdict (strongest of 8 configurations)",
         _grid_overall, ("null",), ("double dissociation",), _grid_thresholds, ("patching.rst",), n_seeds=20,
         n_planted=10, literal=True),
    Case("exp_a_donor", "zhunt.experiments.patching.donor_verdict", _donor, ("null",), ("double dissociation",),
         _donor_thresholds, ("patching.rst",), **_MANY),
    Case("phase0_paired", "zhunt.experiments.behaviour.paired_verdict", _behaviour, ("no difference",),
         ("zh better",), _behaviour_thresholds, ("behaviour.rst",), **_MANY),
    Case("phase0_band", "zhunt.experiments.behaviour.contingency_band", _behaviour_band, ("equal",),
         ("zh advantage",), caption=("behaviour.rst",), literal=True, **_MANY),
    Case("phase2_ratio_band", "zhunt.activations.zspace.band_side", _phase2, ("inside", "above"), ("below",),
         _phase2_thresholds, ("phase2.rst",), **_MANY),
    Case("snr_monotone", "zhunt.activations.snr.snr_verdict", _snr, ("not monotone",), ("monotone decreasing",),
         caption=("snr.rst",), **_MANY),
    Case("theorem2", "zhunt.activations.snr.theorem2_verdict", _theorem2, ("fails at some layer",),
         ("holds at every layer",), caption=("snr.rst",), **_MANY),
    Case("alignment_depth", "zhunt.activations.alignment.alignment_verdict", _alignment, ("never aligned",),
         ("aligned at j=*",), lambda: {"theory.nn_threshold": NN_THRESHOLD}, ("nn_accuracy.rst",), **_MANY),
    Case("crossmap_affine", "zhunt.activations.crossmap.crossmap_verdict", _crossmap("rotation", "scaling", 16),
         ("Procrustes sufficient",), ("affine needed",), _crossmap_thresholds, ("crossmap.rst",), **_MANY),
    Case("crossmap_shared", "zhunt.activations.crossmap.crossmap_verdict", _crossmap("unrelated", "rotation", 8),
         ("no shared geometry",), ("Procrustes sufficient",), _crossmap_thresholds, ("crossmap.rst",), **_MANY),
    Case("cointegration", "zhunt.activations.cointegration.cointegration_verdict", _cointegration,
         ("not cointegrated",), ("en adjusts",), _coint_thresholds, ("cointegration.rst",), **_MANY),
    Case("cointegration_model", "zhunt.activations.cointegration.cointegration_model_verdict", _cointegration_model,
         ("not cointegrated",), ("cointegrated",), _coint_thresholds, ("cointegration.rst",), n_planted=10),
    Case("garch", "zhunt.activations.garch.garch_verdict", _garch, ("not clustered",), ("clustered",),
         _garch_thresholds, ("garch.rst",), **_MANY),
    Case("garch_model", "zhunt.activations.garch.garch_model_verdict", _garch_model, ("not clustered",),
         ("clustered",), _garch_thresholds, ("garch.rst",), n_planted=5),
    Case("exp_b_zdominated", "zhunt.activations.decomposition.label_layer", _zdominated,
         ("mixed", "Z⊥-dominated"), ("Z-dominated",), _exp_b_thresholds, ("decomposition.rst",), n_planted=10),
    Case("exp_b_zh_en", "zhunt.activations.decomposition.decompose (zh-en label)", _zh_en, ("no difference",),
         ("zh higher",), _exp_b_thresholds, ("decomposition.rst",), n_planted=10),
    Case("exp_b_phases", "zhunt.activations.decomposition.has_phases", _phases, ("no phases",), ("phases",),
         _exp_b_thresholds, ("decomposition.rst", "summary.rst"), n_planted=10),
    Case("ard_z_size", "zhunt.activations.ard.z_size", _z_size,
         (f"unimodal-used |Z|={_ARD_D}", "unimodal-off |Z|=0"), (f"bimodal |Z|={_ARD_SHORT}",), _ard_thresholds,
         ("ard_headline.rst", "ard_z_size.rst"), **_MANY),
    Case("ard_heldout", "zhunt.activations.ard.heldout_verdict", _heldout,
         ("neither", "languages only", "languages and problems"), ("problems, not languages",),
         _heldout_thresholds, ("ard_headline.rst", "ard_heldout.rst"), n_seeds=100, n_planted=40, planted_min=0.9),
    Case("bridge_orthogonal", "zhunt.experiments.bridge.bridge_verdict", _bridge, ("not orthogonal",),
         ("approximately orthogonal",), _bridge_thresholds, ("bridge_spectra.rst", "summary.rst"), **_MANY),
    Case("families_gaussian", "zhunt.weights.families.hypothesis_verdict", _families("gaussian"),
         ("real-specialization",), ("training-artifact",), _families_thresholds, ("families.rst",)),
    Case("families_flat", "zhunt.weights.families.hypothesis_verdict", _families("flat"),
         ("real-specialization",), ("training-artifact",), _families_thresholds, ("families.rst",), n_planted=5),
    Case("qk", "zhunt.weights.qk.qk_verdict", _qk, ("REJECTED",), ("STRONG",), _qk_thresholds, ("qk.rst",),
         n_seeds=40),
    Case("qk_anchor_included", "zhunt.weights.qk.qk_verdict (anchor's self-cosine averaged in, as the seed)",
         _qk_literal, ("REJECTED",), ("STRONG",), _qk_thresholds, ("qk.rst",), n_seeds=40, literal=True),
    Case("layer_prediction", "zhunt.experiments.layerpred.layer_verdict", _layerpred, ("does not predict",),
         ("predicts",), _layerpred_thresholds, ("layer_comparison.rst",), **_MANY),
)


def case(name: str) -> Case:
    """The registered case called ``name``."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"no calibration case {name!r}; known: {', '.join(c.name for c in CASES)}")
