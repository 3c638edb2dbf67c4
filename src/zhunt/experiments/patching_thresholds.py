"""Exp. A: every verdict threshold and label of both patching designs, defined once.

The seed's per-configuration grid (rule ``patching``, :mod:`zhunt.experiments.patching`) and the
interchange design (rules ``patching_cell`` / ``patching_interchange``,
:mod:`zhunt.experiments.patching_verdict`) read their constants from here; the report captions
(:func:`zhunt.experiments.patching.verdict_caption`,
:func:`zhunt.experiments.patching_verdict.verdict_caption`) print them.
"""

from __future__ import annotations

__all__ = ["ALPHA", "N_BOOTSTRAP", "MIN_Z_LANGUAGE_PRESERVATION", "MAX_ZPERP_ANSWER_CHANGE",
           "MIN_DONOR_Z_LANGUAGE_PRESERVATION", "GRID_VERDICTS", "MIN_IIA_GAIN", "MIN_NPE_GAIN", "MIN_PAIRS",
           "POSITIVE_CONTROL_MIN_IIA", "MIN_CEILING_IIA", "INTERCHANGE_VERDICTS"]

# ---------------------------------------------------------------- both designs
#: Significance level: the McNemar tests of the grid's verdict; the family-wise level (Holm) of the
#: two primary tests of the interchange verdict.
ALPHA = 0.05
#: Bootstrap resamples of every percentile CI of the grid's rates.
N_BOOTSTRAP = 2000

# ---------------------------------------------------------------- the seed's grid (rule patching)
#: L1: least Z-patch language-preservation rate for a double dissociation.
MIN_Z_LANGUAGE_PRESERVATION = 0.8
#: K: largest Z⊥-patch answer-change rate for a double dissociation ("Z⊥ keeps answers").
MAX_ZPERP_ANSWER_CHANGE = 0.2
#: Donor verdict: least Z-patch language-preservation rate for "Z carries the problem".
MIN_DONOR_Z_LANGUAGE_PRESERVATION = 0.8
#: Verdict labels of the grid, strongest first (``reverse`` is the opposite effect).
GRID_VERDICTS = ("double dissociation", "partial success", "null", "reverse")

# ---------------------------------------------------------------- the interchange design
#: Least IIA gain of Z over the energy-matched random control (absolute).
MIN_IIA_GAIN = 0.10
#: Least NPE gain of Z over the energy-matched random control.
MIN_NPE_GAIN = 0.10
#: Least pairs with a first answer token (their clean runs diverge) for any label but ``null``.
MIN_PAIRS = 10
#: Least IIA of the template-aligned full interchange (positive control) at every layer.
POSITIVE_CONTROL_MIN_IIA = 0.95
#: Least IIA of the template-aligned full interchange at the primary cell's site and layer for the
#: primary test to have a ceiling: below it the prompt positions at that site do not carry the
#: first answer token (it is computed elsewhere, e.g. at a teacher-forced format token), so no
#: subspace patch there can, and the label is ``untestable`` whatever Z does.
MIN_CEILING_IIA = 0.5
#: Labels of the interchange verdict, strongest first (``untestable``: the site has no ceiling).
INTERCHANGE_VERDICTS = ("causal", "partial", "null", "reverse", "untestable")
