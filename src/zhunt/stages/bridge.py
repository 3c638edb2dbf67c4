"""Stage of rule ``bridge`` (Exp. D): linear maps between Chinese and English Z-coordinates.

Reads the paired prompt vectors (:func:`zhunt.data.pairing.pair_by_problem`) and the masks of every
(site, layer), fits with :func:`zhunt.experiments.bridge.bridge_layer` and writes the rule's tables
and figures (:mod:`zhunt.report.bridge`).
"""

from __future__ import annotations

import logging

import numpy as np

from zhunt.errors import ZhuntError
from zhunt.io import write_table
from zhunt.progress import Progress
from zhunt.stages.paths import figure_stem, table_paths

__all__ = ["paired_layer_inputs", "run_bridge"]

log = logging.getLogger("zhunt.stages.bridge")


def paired_layer_inputs(store, j: int, *, token_level: bool = True, where: str = "store"):
    """Pooled vectors (and token states) of hidden index ``j`` for the problems posed in both zh and en.

    Returns
    -------
    Hz, He : ndarray of shape (N, d), float64
        Row ``i`` of both is problem ``i`` (:func:`zhunt.data.pairing.pair_by_problem`, zh order).
    tokens : (list of ndarray (T_i, d), list of ndarray (T_i, d)) or None
        Token states without special tokens, per problem; ``None`` unless ``token_level``.
    """
    from zhunt.data.pairing import pair_by_problem

    problems, rows = pair_by_problem({"zh": store.prompt_ids("zh"), "en": store.prompt_ids("en")}, where=where,
                                     min_problems=3)
    Hz = store.pooled(j, "zh")[rows["zh"]].astype(np.float64)
    He = store.pooled(j, "en")[rows["en"]].astype(np.float64)
    if not token_level:
        return Hz, He, None
    tokens = tuple([store.tokens(p, lang, j)[~store.token_mask(p, lang)].astype(np.float64) for p in problems]
                   for lang in ("zh", "en"))
    return Hz, He, tokens


def _layer_masks(mask_path, ks, kind: str, hidden_size: int) -> dict:
    from zhunt.weights.masks import read_mask

    masks = {}
    for k in ks:
        V = read_mask(mask_path, kind, int(k))
        if V.shape[1] != hidden_size:
            raise ZhuntError(str(mask_path), f"mask width {V.shape[1]} != hidden size {hidden_size}")
        masks[k] = V
    return masks


def run_bridge(inputs, params, outputs, *, wildcards=None, threads=1, seed: int = 0, kind: str = "multihead",
               token_level: bool = True) -> None:
    """Rule ``bridge``: every estimator at every (site, layer, k, direction, level) with its null.

    ``inputs``: ``store`` and ``masks`` (one file per ``params["layers"]``, in that order); ``params``:
    ``layers``, ``ks``, ``n_permutations``, ``site``, ``site_variants`` (each site's rows follow the
    primary's; figures show the primary site). ``outputs``: ``table`` ([tsv, md]), ``extra``
    ([spectra tsv, null tsv]), ``fig_spectra``, ``fig_loo``, ``fig_null``.
    """
    from zhunt.data.store import ActivationStore
    from zhunt.experiments.bridge import bridge_frames, bridge_layer
    from zhunt.models.site import check_site, hidden_index
    from zhunt.report import bridge as fig

    model_name, store_path = wildcards["model"], inputs["store"]
    masks_in = inputs["masks"]
    layers, mask_paths = list(params["layers"]), [masks_in] if isinstance(masks_in, str) else list(masks_in)
    if len(mask_paths) != len(layers):
        raise ZhuntError("bridge.masks", f"{len(mask_paths)} mask files for {len(layers)} layers {layers}")
    sites = list(dict.fromkeys([check_site(params["site"])] + [check_site(v) for v in params["site_variants"]]))
    rows, spectra, nulls = [], [], []
    with ActivationStore(store_path) as store:
        progress = Progress(len(sites) * len(layers), "bridge layer")
        for n_done, (site, (layer, mpath)) in enumerate((s, lm) for s in sites for lm in zip(layers, mask_paths)):
            progress.update(n_done)
            if not 0 <= int(layer) < store.num_layers:
                raise ZhuntError(str(store_path), f"layer {layer} outside 0..{store.num_layers - 1}")
            j = hidden_index(int(layer), site)
            Hz, He, tokens = paired_layer_inputs(store, j, token_level=token_level, where=str(store_path))
            masks = _layer_masks(mpath, params["ks"], kind, store.hidden_size)
            parts = bridge_layer(Hz, He, masks, tokens, model=model_name, layer=layer,
                                 n_permutations=params["n_permutations"], seed=seed)
            for acc, part in zip((rows, spectra, nulls), parts):
                acc.extend(dict(r, site=site, hidden_index=j) for r in part)
    table, spectra_df, null_df = bridge_frames(rows, spectra, nulls)
    write_table(table, *table_paths(outputs["table"]))
    spectra_tsv, null_tsv = outputs["extra"]
    write_table(spectra_df, spectra_tsv)
    write_table(null_df, null_tsv)
    prim = sites[0]
    title = f"{model_name} (site {prim})"
    fig.plot_spectra(spectra_df[spectra_df["site"] == prim], title, figure_stem(outputs["fig_spectra"]))
    fig.plot_loo(table[table["site"] == prim], title, figure_stem(outputs["fig_loo"]))
    fig.plot_null(table[table["site"] == prim], null_df[null_df["site"] == prim], title,
                  figure_stem(outputs["fig_null"]))
    log.info("bridge %s: %d fits over %d site(s) x %d layer(s)", model_name, len(table), len(sites), len(layers))
