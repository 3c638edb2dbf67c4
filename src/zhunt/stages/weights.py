"""Stages of the weight-only rules: ``build_masks``, ``structure``, ``weight_families``, ``qk_operators``.

Each ``run_<rule>`` follows the contract of :mod:`zhunt.stages`: it loads the prepared model on
CPU, calls the science of :mod:`zhunt.weights` (arrays in, frames and dicts out), renders with
:mod:`zhunt.report` and writes exactly the rule's named outputs, atomically.
"""

from __future__ import annotations

import logging
import time

from zhunt import __version__
from zhunt.io import write_json, write_table, write_text
from zhunt.progress import Progress
from zhunt.stages.paths import figure_stem, table_paths

__all__ = ["build_layer_masks", "run_build_masks", "run_structure", "run_weight_families", "run_qk_operators"]

log = logging.getLogger("zhunt.stages.weights")


def _load_adapter(model_dir, **kwargs):
    from zhunt.models import get_adapter, load_model

    model, _ = load_model(model_dir, **kwargs)
    return get_adapter(model)


# ------------------------------------------------------------------------------------------ build_masks

def build_layer_masks(model_dir, model_name: str, layer: int, ks, kinds, out_path) -> None:
    """Compute and write the Z-masks of one decoder layer (:func:`zhunt.weights.masks.z_masks`) to ``out_path``."""
    from zhunt.models.loader import weights_sha256
    from zhunt.config import check_ks, check_layer
    from zhunt.weights.masks import write_masks, z_masks

    t0 = time.perf_counter()
    ad = _load_adapter(model_dir, device="cpu", dtype="float32")
    check_layer(layer, ad.num_layers, model_name)
    check_ks(ks, ad.hidden_size, model_name, ad.head_dim if "head0" in kinds else None)
    masks = z_masks(ad.layer_weights(layer), ks=ks, kinds=kinds)
    write_masks(out_path, masks, {
        "model": model_name, "layer": layer, "ks": list(ks), "kinds": list(kinds),
        "model_weights_sha256": weights_sha256(model_dir),
        "hidden_size": ad.hidden_size, "num_heads": ad.num_heads, "head_dim": ad.head_dim,
        "zhunt_version": __version__,
    })
    log.info("masks for %s L%d (k=%s, %s) in %.2fs", model_name, layer, list(ks), list(kinds),
             time.perf_counter() - t0)


def run_build_masks(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Rule ``build_masks``: ``outputs["masks"]`` holds V_Z of layer ``wildcards["layer"]`` for every
    ``params["ks"]`` and ``params["kinds"]``."""
    build_layer_masks(inputs["model"], wildcards["model"], int(wildcards["layer"]), params["ks"], params["kinds"],
                      outputs["masks"])


# ------------------------------------------------------------------------------------------ structure

def _write_grassmann(path, tables, k: int, d: int, model: str) -> None:
    """``grassmann.h5``: the multi-head, per-head and adjacent Grassmann similarities of ``tables``."""
    import h5py

    from zhunt.io import atomic_path

    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("multihead", data=tables.S)
            f.create_dataset("per_head", data=tables.S_heads)
            f.create_dataset("adjacent", data=tables.adj["sim"])
            f.attrs["k"] = k
            f.attrs["d"] = d
            f.attrs["model"] = model
            f.attrs["convention"] = (
                "multihead[l, m] = Grassmann similarity (mean squared cosine of principal angles) of the "
                "top-k right singular subspaces of the stacked attention kernels of decoder layers l and m; "
                "per_head[l, m, h] = the same for query head h alone; adjacent[l] = multihead[l, l+1]")


def run_structure(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Checkpoint ``structure``: effective ranks, layer similarity, FFN alignment, phases and the
    predicted bottleneck of ``inputs["model"]`` (:mod:`zhunt.weights.structure`), k = ``params["k"]``."""
    from zhunt.report import structure as fig
    from zhunt.weights.structure import analyze_model, check_structure_input, structure_tables

    model_name = wildcards["model"]
    k = int(params["k"])
    adapter = _load_adapter(inputs["model"], device="cpu", dtype="float32")
    check_structure_input(adapter.num_layers, adapter.head_dim, adapter.hidden_size, k, str(inputs["model"]))
    res = analyze_model(adapter, k=k)
    del adapter
    t = structure_tables(res, model_name)

    write_table(t.heads, outputs["heads"])
    for name, df in (("erank", t.per_layer), ("summary", t.summary)):
        write_table(df, *table_paths(outputs[name]))
    _write_grassmann(outputs["grassmann"], t, res.k, res.d, model_name)
    for name, df in (("adjacent", t.adjacent), ("ffn", t.ffn), ("phases", t.phases_df)):
        write_table(df, *table_paths(outputs[name]))
    write_table(t.bottleneck_df, outputs["bottleneck"])
    write_table(t.layer_scores, *table_paths(outputs["layer_scores"]))

    fig.plot_effective_rank(t.per_layer, model_name, figure_stem(outputs["fig_erank"]), t.phases)
    fig.plot_grassmann(t.S, t.S_heads, model_name, res.k, figure_stem(outputs["fig_grassmann"]))
    fig.plot_ffn_alignment(t.ffn, model_name, res.k, figure_stem(outputs["fig_ffn"]), t.phases)
    fig.plot_phases(t.adj, t.per_layer, t.phases, t.bottleneck, model_name, figure_stem(outputs["fig_phases"]))
    log.info("%s: predicted bottleneck L%d, phases %s", model_name, t.bottleneck["predicted_layer"],
             t.phases.pattern)


# ------------------------------------------------------------------------------------------ weight_families

def run_weight_families(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Rule ``weight_families``: raw vs Procrustes-aligned cosine of adjacent layers' weight families
    against their nulls (:mod:`zhunt.weights.families`), rotation side ``params["side"]``."""
    from zhunt.report import families as rep
    from zhunt.weights.families import NULL_DRAWS, analyse_families, family_matrices

    t0 = time.perf_counter()
    model_name, side = wildcards["model"], params["side"]
    adapter = _load_adapter(inputs["model"], device="cpu")
    n = adapter.num_layers
    progress = Progress(n, "families layer")

    def layers():
        for L in range(n):
            progress.update(L)
            yield family_matrices(adapter.layer_weights(L))

    r = analyse_families(layers(), n, side=side, seed=0, model=model_name)
    verdict = r["verdict"]
    write_table(r["pairs"], outputs["table"], outputs["table_md"])
    write_table(r["by_phase"], outputs["by_phase"])
    write_text(outputs["by_phase_md"], rep.by_phase_markdown(r["by_phase"], model_name, side, verdict))
    write_text(outputs["verdict"], rep.verdict_markdown(model_name, side, r["pairs"], r["by_phase"], verdict,
                                                        r["nulls"], NULL_DRAWS, n))
    write_table(r["nulls"].assign(model=model_name, side=side, verdict=verdict["label"],
                                  criteria=verdict["criteria"]), outputs["verdict_tsv"])
    write_json(outputs["null_json"], r["null_json"])
    write_json(outputs["aligned_json"], r["aligned_json"])
    rep.plot_by_phase(r["by_phase"], r["nulls"], figure_stem(outputs["fig"]), model_name)
    log.info("families %s: %d pairs, verdict %s (%.1f s)", model_name, n - 1, verdict["label"],
             time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------ qk_operators

def run_qk_operators(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Rule ``qk_operators``: seed-004 QK operators across layers (:mod:`zhunt.weights.qk`) against anchor
    layer ``params["anchor"]`` with ``params["factors"]`` factors."""
    from zhunt.report import qk as rep
    from zhunt.weights.qk import (analyse_qk, anchor_table, operator_cos_table, qk_factors, sign_table,
                                  verdict_table, write_qk_exports)

    t0 = time.perf_counter()
    model_name, factors = wildcards["model"], params["factors"]
    adapter = _load_adapter(inputs["model"], device="cpu")
    progress = Progress(adapter.num_layers, "QK layer")
    facs = []
    for L in range(adapter.num_layers):
        facs.append(qk_factors(adapter.layer_weights(L), factors))
        progress.update(L + 1)
    del adapter
    res = analyse_qk(facs, anchor=params["anchor"])

    write_table(operator_cos_table(res), outputs["cos"])
    anchor_df, sign_df = anchor_table(res), sign_table(res)
    write_table(anchor_df, outputs["anchor"])
    write_text(outputs["anchor_md"], rep.anchor_markdown(anchor_df, res, model_name, factors))
    write_table(sign_df, outputs["signs"])
    write_text(outputs["signs_md"], rep.sign_markdown(sign_df, res))
    write_text(outputs["verdict"], rep.verdict_markdown(res, model_name, factors))
    write_table(verdict_table(res, model_name, factors), outputs["verdict_tsv"])
    write_qk_exports(res, outputs["grams"], outputs["eigdirs"], model_name, factors)
    rep.plot_qk_heatmap(res, figure_stem(outputs["fig"]), model_name, factors)
    log.info("qk %s: mean cos to anchor %.4f -> %s (%.1f s)", model_name, res["mean_cos_to_anchor"],
             res["verdict"], time.perf_counter() - t0)
