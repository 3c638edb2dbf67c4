"""Stages of the activation-space analyses of Z: rules ``phase2`` and ``datadriven_z``.

Each ``run_<rule>`` follows the contract of :mod:`zhunt.stages`; the work is done by
:mod:`zhunt.activations.zspace` with the rule's output paths.
"""

from __future__ import annotations

from zhunt.activations import zspace
from zhunt.data.numerals import store_numeral_ids

__all__ = ["run_phase2", "run_datadriven_z"]


def _where(model: str, *keys: str) -> dict:
    """Config keys named in errors about the study's sweep of ``model``."""
    names = {"layers": "phase2_layers", "ks": "phase2_k", "kinds": "mask_kinds"}
    return {k: f"models.{model}.study.{names[k]}" for k in keys}


def run_phase2(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Phase 2 metrics at every site (outputs ``table``, ``summary``, ``fig``, ``digit``)."""
    model, layers = wildcards["model"], list(params["layers"])
    zspace.run_phase2(inputs["store"], dict(zip(layers, inputs["masks"])), model, layers, list(params["ks"]),
                      kinds=tuple(params["kinds"]), n_random=params["n_random"], out_tsv=outputs["table"][0],
                      out_md=outputs["table"][1], summary_tsv=outputs["summary"][0],
                      summary_md=outputs["summary"][1], fig_stem=outputs["fig"][0], site=params["site"],
                      site_variants=list(params["site_variants"]),
                      numeral_ids=store_numeral_ids(inputs["model"], inputs["store"]), digit_tsv=outputs["digit"],
                      where=_where(model, "layers", "ks", "kinds"))


def run_datadriven_z(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """The data-driven language subspace M_s next to Z (outputs ``table``, ``fig``) and its basis file ``basis``."""
    from zhunt.experiments.ablation import write_ms_basis

    model, layers = wildcards["model"], list(params["layers"])
    zspace.run_datadriven(inputs["store"], dict(zip(layers, inputs["masks"])), model, layers, list(params["ks"]),
                          n_random=params["n_random"], out_tsv=outputs["table"][0], out_md=outputs["table"][1],
                          fig_stem=outputs["fig"][0], site=params["site"],
                          site_variants=list(params["site_variants"]), where=_where(model, "layers", "ks"))
    write_ms_basis(outputs["basis"], inputs["store"], model)  # every layer, both sites
