"""Stages of Exp. A (activation patching): rules ``patching``, ``patching_cell``, ``patching_das`` and
``patching_interchange`` (the contract: :mod:`zhunt.stages`).

Every stage reads its inputs, calls the science of :mod:`zhunt.experiments.patching_cells` /
:mod:`zhunt.experiments.patching_metrics` / :mod:`zhunt.experiments.patching_verdict`, renders through
:mod:`zhunt.report.patching_render` and writes exactly the rule's named outputs.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["run_patching", "run_patching_cell", "run_patching_das", "run_patching_interchange"]


def _context(inputs: Mapping, params: Mapping, threads: int):
    """The model, prompts and store shared by a cell's stages (:func:`zhunt.experiments.patching_cells.cell_context`)."""
    from zhunt.experiments.patching_cells import cell_context

    return cell_context(inputs["model"], inputs["store"], inputs["prompts"], list(params["languages"]),
                        inputs["templates"], params["runtime"]["template"], threads=threads)


def _first(value):
    """The single path of an optional input (``[]`` / ``None`` -> None)."""
    if value is None or isinstance(value, str):
        return value
    value = list(value)
    return value[0] if value else None


def run_patching_cell(inputs: Mapping, params: Mapping, outputs: Mapping, *, wildcards=None, threads: int = 1) -> None:
    """Rule ``patching_cell``: one interchange cell's records (``outputs["records"]``).

    Inputs ``model, store, mask, prompts, templates``, optional ``das`` (the
    cell's DAS basis) and ``ms_basis`` (:func:`zhunt.experiments.ablation.write_ms_basis`; the
    ``ms_ablation`` rows and the DAS overlap with M_s). Params ``runtime, languages, patching,
    max_new_tokens, batch_size``; wildcard ``cell``.
    """
    from zhunt.experiments.patching_cells import ablation_layers, cell_records, read_cell_bases
    from zhunt.experiments.patching_design import parse_cell
    from zhunt.io import write_table

    cell = parse_cell(wildcards["cell"])
    opts = params["patching"]
    ms = opts["ms_ablation"]
    ms_path = _first(inputs.get("ms_basis"))
    ctx = _context(inputs, params, threads)
    n_layers = len(ctx["adapter"].layers)
    bases = read_cell_bases(cell, ctx["adapter"].hidden_size, inputs["mask"], das_path=_first(inputs.get("das")),
                            ms_path=ms_path, ms_layers=ablation_layers(cell.layer, ms["layer_offsets"], n_layers),
                            ms_pooling=ms["pooling"])
    rec = cell_records(ctx, cell, bases, n_donors=opts["n_donors"], max_new_tokens=params["max_new_tokens"],
                       batch_size=params["batch_size"], ms_lams=ms["lam"] if ms_path is not None else ())
    write_table(rec, outputs["records"])


def run_patching_das(inputs: Mapping, params: Mapping, outputs: Mapping, *, wildcards=None, threads: int = 1) -> None:
    """Rule ``patching_das``: the DAS basis of one site x layer x k (``outputs["basis"]``, HDF5).

    The file holds datasets ``basis`` (k, d), ``losses``, ``cos_angles_z`` and
    the attributes of :func:`zhunt.experiments.patching_cells.fit_cell_das`.
    Wildcards ``site, layer, k, lang``.
    """
    import h5py

    from zhunt.experiments.patching_cells import fit_cell_das
    from zhunt.experiments.patching_design import Cell
    from zhunt.io import atomic_path
    from zhunt.weights.masks import read_mask

    lang = wildcards["lang"]
    cell = Cell(wildcards["site"], int(wildcards["layer"]), int(wildcards["k"]), "aligned", f"{lang}<-{lang}")
    opts = params["patching"]
    ctx = _context(inputs, params, threads)
    arrays, attrs = fit_cell_das(ctx, cell, read_mask(inputs["mask"], "multihead", cell.k),
                                 n_donors=opts["n_donors"], steps=opts["das"]["steps"], lr=opts["das"]["lr"],
                                 batch_size=params["batch_size"], max_new_tokens=params["max_new_tokens"])
    with atomic_path(outputs["basis"], suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for name, a in arrays.items():
                f[name] = a
            for key, v in attrs.items():
                f.attrs[key] = v


def run_patching_interchange(inputs: Mapping, params: Mapping, outputs: Mapping, *, wildcards=None,
                             threads: int = 1) -> None:
    """Rule ``patching_interchange``: gather the cells into ``subspaces.tsv`` (+ ``.md``), the verdict
    and the IIA/NPE figure (:func:`zhunt.report.patching_render.gather_interchange`).

    Params ``primary`` (the primary cell's name) and ``primary_lam`` (the ``ms_ablation`` row of
    the comparisons).
    """
    from zhunt.report.patching_render import gather_interchange

    table, fig = list(outputs["table"]), list(outputs["fig"])
    gather_interchange(list(inputs["cells"]), params["primary"], wildcards["model"], out_tsv=table[0],
                       out_md=table[1], out_verdict=outputs["verdict"], out_fig_stem=fig[0][: -len(".pdf")],
                       primary_lam=params.get("primary_lam", np.nan))


def run_patching(inputs: Mapping, params: Mapping, outputs: Mapping, *, wildcards=None, threads: int = 1) -> None:
    """Rule ``patching``: the seed's per-configuration patching grid (records, metrics, tables, verdict).

    See :func:`zhunt.experiments.patching.run_patching`.
    """
    from zhunt.experiments.patching import run_patching as grid

    layers = list(params["layers"])
    opts = params["patching"]
    grid(inputs["model"], wildcards["model"], inputs["store"], dict(zip(layers, inputs["masks"])), inputs["prompts"],
         list(params["languages"]), inputs["templates"], params["runtime"]["template"], layers, list(params["ks"]),
         alignments=tuple(opts["alignments"]), directions=tuple(opts["directions"]), n_random=opts["n_random"],
         max_new_tokens=params["max_new_tokens"], batch_size=params["batch_size"],
         patch_generated=opts["patch_generated"], sinkhorn=opts["sinkhorn"],
         sources=tuple(opts.get("sources", ("same", "donor"))), out_records=outputs["records"],
         out_metrics_tsv=outputs["metrics"][0], out_metrics_md=outputs["metrics"][1],
         out_tables_dir=outputs["tables"], out_verdict_md=outputs["verdict"], threads=threads)
