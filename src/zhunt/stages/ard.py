"""Stages of Exp. C (ARD-MMD): rules ``ard_layer``, ``ard_heldout``, ``ard_summary``.

Each ``run_<rule>`` follows the contract of :mod:`zhunt.stages`; the work is done by
:mod:`zhunt.activations.ard` with the rule's output paths.
"""

from __future__ import annotations

from zhunt.activations import ard

__all__ = ["run_ard_layer", "run_ard_heldout", "run_ard_summary"]


def run_ard_layer(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """The λ × init × objective × basis grid of layer ``wildcards["layer"]`` (outputs ``h5``, ``tsv``)."""
    grid = params["ard"]
    ard.run_ard_layer(inputs["store"], inputs["mask"], wildcards["model"], int(wildcards["layer"]), grid["lambdas"],
                      lr=grid["lr"], min_steps=grid["min_steps"], max_steps=grid["max_steps"],
                      k_warm=params["k_warm"], out_h5=outputs["h5"], out_tsv=outputs["tsv"], site=params["site"],
                      site_variants=list(params["site_variants"]))


def run_ard_heldout(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Held-out MMD tests of the primary layer's run at the middle λ (:func:`zhunt.activations.ard.middle_lambda`).

    Output ``tsv``.
    """
    grid = params["ard"]
    ard.run_heldout_test(inputs["store"], inputs["mask"], params["layer"], ard.middle_lambda(grid["lambdas"]),
                         out_tsv=outputs["tsv"], model_name=wildcards["model"], k_warm=params["k_warm"],
                         lr=grid["lr"], min_steps=grid["min_steps"], max_steps=grid["max_steps"],
                         n_permutations=params["n_permutations"], site=params["site"])


def run_ard_summary(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """|Z| vs layer, spectrum, collapse and the headline (outputs ``table``, ``headline``, ``fig_*``)."""
    ard.summarise_ard(list(inputs["tsv"]), list(inputs["h5"]), params["primary"], wildcards["model"],
                      outputs["table"][0], outputs["table"][1], fig_size=outputs["fig_size"][0],
                      fig_spectrum=outputs["fig_spectrum"][0], fig_traj=outputs["fig_traj"][0],
                      heldout_tsv=inputs["heldout"], out_headline=outputs["headline"], site=params["site"])
