"""Stages of the activation-space analyses of Z: rules ``phase2`` and ``datadriven_z``.

Each ``run_<rule>`` follows the contract of :mod:`zhunt.stages`: it opens the store, reads the
masks of the sweep, lets :mod:`zhunt.activations.zspace` measure, and writes the tables and the
figure (:mod:`zhunt.report.zspace`) at the rule's output paths.
"""

from __future__ import annotations

import logging

from zhunt.activations import zspace
from zhunt.data.numerals import store_numeral_ids
from zhunt.data.store import ActivationStore
from zhunt.io import write_table, write_text
from zhunt.report import zspace as render
from zhunt.stages.paths import figure_stem, table_paths
from zhunt.weights.masks import load_layer_masks

__all__ = ["run_phase2", "run_datadriven_z"]

log = logging.getLogger("zhunt.stages.zspace")

#: The language pair of both analyses (cross-lingual deltas are ``x_zh - x_en``).
LANGS = ("zh", "en")


def _where(model: str, *keys: str) -> dict:
    """Config keys named in errors about the study's sweep of ``model``."""
    names = {"layers": "phase2_layers", "ks": "phase2_k", "kinds": "mask_kinds"}
    return {k: f"models.{model}.study.{names[k]}" for k in keys}


def _sweep_masks(store, mask_paths, layers, ks, kinds, poolings, n_random, where) -> dict:
    """The checked sweep's masks ``{(layer, kind, k): V_Z}`` (the settings are checked before any
    mask file is read, so a bad layer or k names its config key)."""
    layers, ks, kinds, _ = zspace.check_sweep(store, layers, ks, kinds, poolings, n_random, where)
    return load_layer_masks(dict(zip(layers, mask_paths)), layers, kinds, ks, store.hidden_size,
                            where=where.get("masks", "masks"))


def run_phase2(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Phase 2 metrics at every site (outputs ``table``, ``summary``, ``fig``, ``digit``)."""
    model, layers, ks, kinds = wildcards["model"], list(params["layers"]), list(params["ks"]), tuple(params["kinds"])
    where = _where(model, "layers", "ks", "kinds")
    poolings = zspace.POOLINGS
    numeral_ids = store_numeral_ids(inputs["model"], inputs["store"])
    with ActivationStore(inputs["store"]) as store:
        masks = _sweep_masks(store, inputs["masks"], layers, ks, kinds, poolings, params["n_random"], where)
        res = zspace.phase2(store, masks, layers, ks, kinds=kinds, poolings=poolings, langs=LANGS,
                            n_random=params["n_random"], model_name=model, site=params["site"],
                            site_variants=list(params["site_variants"]), numeral_ids=numeral_ids, where=where)
    out_tsv, out_md = table_paths(outputs["table"])
    write_table(res.table, out_tsv, markdown=out_md)
    summary_tsv, summary_md = table_paths(outputs["summary"])
    write_table(res.summary, summary_tsv)
    write_text(summary_md, render.phase2_summary_markdown(res.summary, model, LANGS))
    write_table(res.digit, outputs["digit"])
    primary = res.table[(res.table["site"] == res.sites[0]) & (res.table["tokens"] == "all")]
    render.plot_phase2_heatmaps(primary, f"{model} (site {res.sites[0]})", figure_stem(outputs["fig"]))
    for line in render.phase2_headlines(res.summary, model, LANGS)[2:-3]:
        log.info("%s", line)


def run_datadriven_z(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """The data-driven language subspace M_s next to Z (outputs ``table``, ``fig``) and its basis file ``basis``."""
    from zhunt.experiments.ablation import write_ms_basis

    model, layers, ks = wildcards["model"], list(params["layers"]), list(params["ks"])
    where, kinds, poolings = _where(model, "layers", "ks"), ("multihead",), ("last", "mean")
    with ActivationStore(inputs["store"]) as store:
        masks = _sweep_masks(store, inputs["masks"], layers, ks, kinds, poolings, params["n_random"], where)
        table = zspace.datadriven(store, masks, layers, ks, kinds=kinds, poolings=poolings, langs=LANGS,
                                  n_random=params["n_random"], site=params["site"],
                                  site_variants=list(params["site_variants"]), where=where)
    write_table(table, *table_paths(outputs["table"]))
    site = zspace.phase2_sites(params["site"], params["site_variants"])[0]
    render.plot_datadriven(table[table["site"] == site], f"{model} (site {site})", figure_stem(outputs["fig"]))
    write_ms_basis(outputs["basis"], inputs["store"], model)  # every layer, both sites
