"""Stages of the seed-003 tests on the activations: rules ``theory`` and ``garch``.

Each ``run_<rule>`` follows the contract of :mod:`zhunt.stages`; the work is done by
:mod:`zhunt.activations.theory` and :mod:`zhunt.activations.garch` with the rule's output paths.
"""

from __future__ import annotations

from zhunt.activations import garch, theory
from zhunt.data.numerals import store_numeral_ids

__all__ = ["run_theory", "run_garch"]


def run_theory(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """SNR, contributions, NN retrieval, alignment depth, cross-maps, cointegration and the digit confound.

    ``inputs["generations"]``: Phase 0's records (the generation lengths), or empty / absent
    (``theory.generation_lengths: prompt``: the prompt token lengths stand in).
    """
    gens = inputs.get("generations")
    if gens is not None and not isinstance(gens, str):
        gens = list(gens)[0] if len(gens) else None
    theory.run_theory(inputs["store"], wildcards["model"],
                      {k: outputs[k] for k in theory.THEORY_TABLES + theory.THEORY_FIGURES},
                      nn_threshold=params["nn_threshold"], pca_dim=params["pca_dim"],
                      coint_components=params["coint_components"], generation_lengths=gens,
                      site=params["site"], layers=list(params["layers"]),
                      numeral_ids=store_numeral_ids(inputs["model"], inputs["store"]), digit_tsv=outputs["digit"])


def run_garch(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """GARCH(1,1) per problem on the per-step update differences (outputs ``table``, ``fig``)."""
    garch.run_garch(inputs["steps"], outputs["table"][0], outputs["table"][1], outputs["fig"][0])
