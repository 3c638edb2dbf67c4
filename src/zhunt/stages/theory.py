"""Stages of the seed-003 tests on the activations: rules ``theory`` and ``garch``.

Each ``run_<rule>`` follows the contract of :mod:`zhunt.stages`; the work is done by
:mod:`zhunt.activations.theory` with the rule's output paths.
"""

from __future__ import annotations

from zhunt.activations.garch import run_garch as garch_fits
from zhunt.activations.theory import THEORY_FIGURES, THEORY_TABLES, run_theory as theory_tests
from zhunt.data.numerals import store_numeral_ids

__all__ = ["run_theory", "run_garch"]


def run_theory(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """SNR, contributions, NN retrieval, alignment depth, cross-maps, cointegration and the digit confound."""
    theory_tests(inputs["store"], wildcards["model"], {k: outputs[k] for k in THEORY_TABLES + THEORY_FIGURES},
                 nn_threshold=params["nn_threshold"], pca_dim=params["pca_dim"],
                 coint_components=params["coint_components"], generation_lengths=inputs["generations"],
                 site=params["site"], layers=list(params["layers"]),
                 numeral_ids=store_numeral_ids(inputs["model"], inputs["store"]), digit_tsv=outputs["digit"])


def run_garch(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """GARCH(1,1) per problem on the per-step update differences (outputs ``table``, ``fig``)."""
    garch_fits(inputs["steps"], outputs["table"][0], outputs["table"][1], outputs["fig"][0])
