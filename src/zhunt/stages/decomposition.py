"""Stage of Exp. B: rule ``decomposition`` (:mod:`zhunt.activations.decomposition`)."""

from __future__ import annotations

import logging

from zhunt.activations import decomposition
from zhunt.data.store import ActivationStore
from zhunt.errors import ZhuntError
from zhunt.io import write_table, write_text
from zhunt.report.decomposition import decomposition_markdown, plot_decomposition
from zhunt.stages.paths import figure_stem, table_paths
from zhunt.weights.masks import mask_layer, read_mask

__all__ = ["run_decomposition"]

log = logging.getLogger("zhunt.stages.decomposition")


def run_decomposition(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """R(l) per layer, language and k with the primary layer's Z (outputs ``table``, ``fig``)."""
    model, mask_path, n_random = wildcards["model"], inputs["mask"], int(params["n_random"])
    basis_layer = mask_layer(mask_path)
    with ActivationStore(inputs["store"]) as store:
        masks = {int(k): read_mask(mask_path, "multihead", int(k)) for k in params["ks"]}
        for V in masks.values():
            if V.shape[1] != store.hidden_size:
                raise ZhuntError(str(mask_path), f"mask has d={V.shape[1]}, store has d={store.hidden_size}")
        df = decomposition.decomposition(store, masks, basis_layer, n_random=n_random, site=params["site"])
    out_tsv, out_md = table_paths(outputs["table"])
    write_table(df, out_tsv)
    write_text(out_md, decomposition_markdown(df, model, basis_layer, n_random))
    plot_decomposition(df, figure_stem(outputs["fig"]), title=f"{model}: R(l) with Z of layer {basis_layer}")
    pooled = df[df["lang"] == "all"]
    log.info("decomposition %s: %s", model,
             {int(k): dict(zip(g["layer"].astype(int), g["label"])) for k, g in pooled.groupby("k")})
