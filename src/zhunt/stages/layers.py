"""Stages of the layer-prediction rules: ``layer_sweep``, ``layer_causal``, ``layer_das``,
``layer_comparison``, ``models_layer_prediction``.

Do the weights predict the layer where the data finds Z? The science is
:mod:`zhunt.experiments.layerpred` (and :mod:`zhunt.experiments.layer_causal`, the causal sweep);
Markdown and figures are :mod:`zhunt.report.layers`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from zhunt.errors import ZhuntError
from zhunt.io import write_table, write_text
from zhunt.stages.paths import figure_stem, optional_path, table_paths

__all__ = ["read_tsv", "sweep_masks", "run_layer_sweep", "run_layer_causal", "run_layer_das",
           "run_layer_comparison", "run_models_layer_prediction"]

log = logging.getLogger("zhunt.stages.layers")


def read_tsv(path) -> pd.DataFrame:
    """A TSV as a DataFrame; a missing or unreadable file raises :class:`ZhuntError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ZhuntError(str(path), "missing")
    try:
        return pd.read_csv(path, sep="\t")
    except Exception as exc:  # pandas raises several types on malformed input
        raise ZhuntError(str(path), f"unreadable TSV ({exc.__class__.__name__})") from None


def sweep_masks(ad, k: int, model_name: str, layers=None) -> dict:
    """``layer -> V_Z (k, d)`` of every decoder layer (or of ``layers``): the multi-head Z of the sweeps
    (:data:`zhunt.experiments.layerpred.SWEEP_KIND`, :func:`zhunt.weights.masks.z_masks`, the
    function the mask files are written with), from the adapter's float32 weights in one pass."""
    from zhunt.experiments.layerpred import SWEEP_KIND
    from zhunt.weights.masks import z_masks

    if not 0 < k < ad.hidden_size:
        raise ZhuntError(f"models.{model_name}.study.patch_k",
                         f"k={k} must satisfy 0 < k < d={ad.hidden_size} (the hidden size of {model_name})")
    layers = range(ad.num_layers) if layers is None else layers
    return {l: z_masks(ad.layer_weights(l), ks=[k], kinds=[SWEEP_KIND])[SWEEP_KIND]["V"][k] for l in layers}


def run_layer_sweep(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Rule ``layer_sweep``: Phase 2 metrics of each layer's own multi-head Z at every decoder layer.

    The Z of every layer comes from :func:`zhunt.weights.masks.z_masks` (the function the mask files
    are written with), computed here in one pass over ``inputs["model"]``: one model load instead of
    one mask job per layer. ``params``: ``k`` (the primary k, ``0 < k < d``), ``site``, ``n_random``.
    """
    from zhunt.data.store import ActivationStore
    from zhunt.experiments.layerpred import check_sweep_params, layer_sweep
    from zhunt.models import get_adapter, load_model

    t0 = time.perf_counter()
    model_name, k, model_dir = wildcards["model"], int(params["k"]), inputs["model"]
    poolings, n_random = ("mean", "last"), int(params["n_random"])
    site = check_sweep_params(params["site"], poolings, n_random, model_name)
    model, _ = load_model(model_dir, device="cpu", dtype="float32")
    ad = get_adapter(model)
    masks = sweep_masks(ad, k, model_name)
    num_layers, d = ad.num_layers, ad.hidden_size
    del model, ad
    t_masks = time.perf_counter() - t0
    with ActivationStore(inputs["store"]) as store:
        if store.num_layers != num_layers or store.hidden_size != d:
            raise ZhuntError(str(inputs["store"]), f"activation store has {store.num_layers} layers, d="
                                                   f"{store.hidden_size}; the model {model_dir} has {num_layers}, "
                                                   f"d={d}")
        table = layer_sweep(store, masks, k, site=site, poolings=poolings, n_random=n_random)
    table.insert(0, "model", model_name)
    write_table(table, *table_paths(outputs["table"]))
    log.info("%s: layer sweep over %d layers at site %s, k=%d in %.1fs (masks %.1fs)", model_name, num_layers,
             site, k, time.perf_counter() - t0, t_masks)


def _causal_context(inputs, params, model_name: str, threads: int):
    """The checked site and the cell context (model, prompts, store) of the causal and DAS sweeps."""
    from zhunt.experiments.patching_cells import cell_context
    from zhunt.models.site import check_site

    try:
        site = check_site(params["site"])
    except ValueError as exc:
        raise ZhuntError(f"models.{model_name}.study.site", str(exc)) from None
    return site, cell_context(inputs["model"], inputs["store"], inputs["prompts"], list(params["languages"]),
                              inputs["templates"], params["runtime"]["template"], threads=threads)


def run_layer_causal(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Rule ``layer_causal``: IIA and NPE of each layer's own Z at every decoder layer
    (:func:`zhunt.experiments.layer_causal.causal_sweep`), written to ``outputs["table"]``.

    ``inputs``: ``model, store, prompts, templates``; ``params``: ``runtime, languages, k`` (the
    primary k), ``site, direction`` (the primary cell's), ``n_donors, max_new_tokens, batch_size``.
    """
    from zhunt.experiments.layer_causal import causal_sweep

    t0 = time.perf_counter()
    model_name, k = wildcards["model"], int(params["k"])
    site, ctx = _causal_context(inputs, params, model_name, threads)
    masks = sweep_masks(ctx["adapter"], k, model_name)
    table = causal_sweep(ctx, masks, k, site=site, direction=params["direction"], n_donors=int(params["n_donors"]),
                         max_new_tokens=int(params["max_new_tokens"]), batch_size=int(params["batch_size"]))
    table.insert(0, "model", model_name)
    write_table(table, *table_paths(outputs["table"]))
    log.info("%s: causal sweep over %d layers at site %s, k=%d in %.1fs", model_name, len(table), site, k,
             time.perf_counter() - t0)


def run_layer_das(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Rule ``layer_das``: DAS and Z at the DAS sweep's layers, fitted on the train pairs and scored on
    the held-out ones (:func:`zhunt.experiments.layer_causal.das_sweep`), written to ``outputs["table"]``.

    ``inputs``: ``model, store, prompts, templates``; ``params``: those of ``layer_causal`` plus
    ``every`` and ``include`` (:func:`zhunt.experiments.layer_causal.das_sweep_layers`: the stride
    and the layers always swept) and ``das`` (``steps, lr, batch_size, init``).
    """
    from zhunt.experiments.layer_causal import das_sweep, das_sweep_layers

    t0 = time.perf_counter()
    model_name, k, opts = wildcards["model"], int(params["k"]), params["das"]
    site, ctx = _causal_context(inputs, params, model_name, threads)
    try:
        layers = das_sweep_layers(ctx["adapter"].num_layers, int(params["every"]), params["include"])
    except ValueError as exc:
        raise ZhuntError(f"models.{model_name}.study.layer_das", str(exc)) from None
    masks = sweep_masks(ctx["adapter"], k, model_name, layers)
    table = das_sweep(ctx, masks, k, site=site, direction=params["direction"], n_donors=int(params["n_donors"]),
                      steps=int(opts["steps"]), lr=float(opts["lr"]), das_batch_size=int(opts["batch_size"]),
                      init=opts["init"], max_new_tokens=int(params["max_new_tokens"]),
                      batch_size=int(params["batch_size"]))
    table.insert(0, "model", model_name)
    write_table(table, *table_paths(outputs["table"]))
    log.info("%s: DAS sweep over layers %s at site %s, k=%d in %.1fs", model_name, layers, site, k,
             time.perf_counter() - t0)


def run_layer_comparison(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Rule ``layer_comparison``: predicted vs data-best layer, shift-permutation correlations, verdict
    and the depth figure. ``inputs``: ``scores`` (structure/layer_scores.tsv), ``sweep``
    (layers/sweep.tsv) and, where the rule lists them, ``causal_sweep`` (layers/causal.tsv: Z's
    IIA / NPE at every layer), ``das_sweep`` (layers/das.tsv: DAS at the DAS sweep's layers) or
    ``causal`` (patching/subspaces.tsv: DAS at the patching layers, when there is no DAS sweep)."""
    from zhunt.experiments.layerpred import comparison_tables
    from zhunt.report.layers import plot_layer_profiles, verdict_markdown

    model_name, site = wildcards["model"], params["site"]
    opt = {name: optional_path(inputs.get(name)) for name in ("causal", "causal_sweep", "das_sweep")}
    frames = {name: (read_tsv(path) if path is not None else None) for name, path in opt.items()}
    scores = read_tsv(inputs["scores"])
    r = comparison_tables(scores, read_tsv(inputs["sweep"]), model_name, site=site, **frames,
                          where_scores=str(inputs["scores"]), where_sweep=str(inputs["sweep"]),
                          **{f"where_{name}": str(path) for name, path in opt.items()})
    comp, corr = r["comparison"], r["correlations"]
    write_table(comp, *table_paths(outputs["comparison"]))
    write_table(corr, *table_paths(outputs["correlations"]))
    write_text(outputs["verdict"], verdict_markdown(model_name, comp.drop(columns=["model"]),
                                                    corr.drop(columns=["model"]), r["num_layers"], site, r["k"]))
    plot_layer_profiles(scores, r["data"], comp, model_name, figure_stem(outputs["fig"]))
    log.info("%s: predicted L%d, verdict %s", model_name, r["predicted"], r["verdict"])


def run_models_layer_prediction(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Rule ``models_layer_prediction``: the cross-model table and figure of the primary comparison
    (``inputs["comparisons"]``: every model's layers/comparison.tsv), the seed's row quoted last."""
    from zhunt.experiments.layerpred import models_layer_table
    from zhunt.report.layers import plot_models_layer_prediction

    paths = inputs["comparisons"]
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    table = models_layer_table((str(p), read_tsv(p)) for p in paths)
    write_table(table, *table_paths(outputs["table"]))
    plot_models_layer_prediction(table, figure_stem(outputs["fig"]))
