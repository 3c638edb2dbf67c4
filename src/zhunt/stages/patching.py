"""Stages of Exp. A (activation patching): rules ``patching``, ``patching_cell``, ``patching_das`` and
``patching_interchange`` (the contract: :mod:`zhunt.stages`).

Every stage reads its inputs, calls the science of :mod:`zhunt.experiments.patching_cells` /
:mod:`zhunt.experiments.patching_metrics` / :mod:`zhunt.experiments.patching_verdict`, renders through
:mod:`zhunt.report.patching_render` and writes exactly the rule's named outputs.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from zhunt.stages.paths import optional_path

__all__ = ["run_patching", "run_patching_cell", "run_patching_das", "run_patching_interchange"]


def _context(inputs: Mapping, params: Mapping, threads: int):
    """The model, prompts and store a cell's stages share (:func:`zhunt.experiments.patching_cells.cell_context`)."""
    from zhunt.experiments.patching_cells import cell_context

    return cell_context(inputs["model"], inputs["store"], inputs["prompts"], list(params["languages"]),
                        inputs["templates"], params["runtime"]["template"], threads=threads)


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
    ms_path = optional_path(inputs.get("ms_basis"))
    ctx = _context(inputs, params, threads)
    n_layers = len(ctx["adapter"].layers)
    bases = read_cell_bases(cell, ctx["adapter"].hidden_size, inputs["mask"], das_path=optional_path(inputs.get("das")),
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
                                 batch_size=params["batch_size"], max_new_tokens=params["max_new_tokens"],
                                 das_batch_size=opts["das"]["batch_size"])
    with atomic_path(outputs["basis"], suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for name, a in arrays.items():
                f[name] = a
            for key, v in attrs.items():
                f.attrs[key] = v


def run_patching_interchange(inputs: Mapping, params: Mapping, outputs: Mapping, *, wildcards=None,
                             threads: int = 1) -> None:
    """Rule ``patching_interchange``: the cells (``inputs["cells"]``, named ``<cell>.tsv``) into
    ``subspaces.tsv`` (+ ``.md``, ``outputs["table"]``), the verdict and the IIA/NPE figure (``.pdf``, ``.png``).

    Params ``primary`` (the primary cell's name) and ``primary_lam`` (the ``ms_ablation`` row of
    the comparisons; :mod:`zhunt.report.patching_render`).
    """
    from pathlib import Path

    import pandas as pd

    from zhunt.io import write_table, write_text
    from zhunt.report import patching_render as R

    cells = {Path(p).stem: pd.read_csv(p, sep="\t", keep_default_na=True) for p in inputs["cells"]}
    primary, model_name = params["primary"], wildcards["model"]
    primary_lam = params.get("primary_lam", np.nan)
    if primary not in cells:
        from zhunt.errors import ZhuntError

        raise ZhuntError("study.patching.primary", f"primary cell {primary} is not among the {len(cells)} cells")
    t = R.subspaces_table(cells, primary, primary_lam=primary_lam)
    judged = R.judge_interchange(t, primary, primary_lam)
    table, fig = list(outputs["table"]), list(outputs["fig"])
    write_table(t, table[0])
    write_text(table[1], R.subspaces_markdown(t, primary, model_name))
    write_text(outputs["verdict"], R.verdict_markdown(t, primary, model_name, judged))
    R.plot_interchange(t, fig[0][: -len(".pdf")], model_name)


def run_patching(inputs: Mapping, params: Mapping, outputs: Mapping, *, wildcards=None, threads: int = 1) -> None:
    """Rule ``patching``: the seed's per-configuration grid (design, configurations, metrics, verdict, rendering).

    Inputs ``model, store, masks`` (one per layer of ``params["layers"]``), ``prompts, templates``;
    params ``runtime, languages, layers, ks, patching, max_new_tokens, batch_size``; outputs
    ``records``, ``metrics`` (TSV, Markdown), ``verdict`` and the directory ``tables`` (one
    ``table_L{l}_k{k}_{alignment}_{t}-from-{s}[_donor].{tsv,md}`` per configuration). The
    science is :mod:`zhunt.experiments.patching`, the Markdown :mod:`zhunt.report.patching_grid`.
    """
    from pathlib import Path

    import pandas as pd

    from zhunt.data.store import ActivationStore
    from zhunt.experiments import patching as P
    from zhunt.io import write_table, write_text
    from zhunt.report.patching_grid import config_table_markdown, metrics_markdown, patch_table, verdict_markdown

    opts, model_name, seed = params["patching"], wildcards["model"], 0
    masks = dict(zip([int(x) for x in params["layers"]], list(inputs["masks"])))
    grid = P.check_grid(params["layers"], params["ks"], opts["alignments"], opts["directions"], params["languages"],
                        masks, tuple(opts.get("sources", P.SOURCES)))
    ctx = P.grid_context(inputs["model"], model_name, inputs["prompts"], list(params["languages"]),
                         inputs["templates"], params["runtime"]["template"], grid, seed=seed, threads=threads)
    gen_kw = dict(max_new_tokens=int(params["max_new_tokens"]), batch_size=int(params["batch_size"]),
                  add_special_tokens=ctx["add_special"], positions="all" if opts["patch_generated"] else "prompt")
    tables = Path(outputs["tables"])
    tables.mkdir(parents=True, exist_ok=True)
    records, metrics = [], []
    with ActivationStore(inputs["store"]) as store:
        P.check_store(store, ctx, grid["needed"])
        baselines = P.baseline_records(ctx, [t for _, t, _ in grid["dirs"]], gen_kw)
        bases = {}
        for cfg in P.grid_configs(grid):
            V_Z, R = _grid_bases(bases, masks[cfg["layer"]], cfg, ctx["adapter"].hidden_size, opts["n_random"], seed)
            rec = P.config_records(ctx, store, baselines[cfg["target"]], cfg, V_Z, R, gen_kw, sinkhorn=opts["sinkhorn"])
            m = P.config_result(rec, cfg, seed=seed)
            records.append(rec)
            metrics.append(m)
            tab, md = patch_table(rec, cfg["direction"])
            suffix = "" if cfg["source"] == "same" else f"_{cfg['source']}"
            stem = tables / (f"table_L{cfg['layer']}_k{cfg['k']}_{cfg['alignment']}_"
                             f"{P.direction_slug(cfg['direction'])}{suffix}")
            write_table(tab, f"{stem}.tsv")
            write_text(f"{stem}.md", config_table_markdown(md, model_name, cfg, m["verdict"], m["criteria"]))
    metrics = pd.DataFrame(metrics)
    write_table(pd.concat(records, ignore_index=True), outputs["records"])
    write_table(metrics, list(outputs["metrics"])[0])
    write_text(list(outputs["metrics"])[1], metrics_markdown(metrics, grid["sources"], model_name))
    text, by_source = verdict_markdown(metrics, grid, model_name)
    write_text(outputs["verdict"], text)
    P.log.info("patching %s: overall %s (%d configs)", model_name,
               ", ".join(f"{s}: {v['overall']}" for s, v in by_source.items()), len(metrics))


def _grid_bases(cache: dict, mask_path, cfg: Mapping, d: int, n_random: int, seed: int):
    """``(V_Z, random bases)`` of a config's (layer, k), read once (:func:`zhunt.weights.masks.read_mask`,
    :func:`zhunt.experiments.patching.random_bases`)."""
    from zhunt.errors import ZhuntError
    from zhunt.experiments.patching import random_bases
    from zhunt.weights.masks import read_mask

    key = (cfg["layer"], cfg["k"])
    if key not in cache:
        V_Z = read_mask(mask_path, "multihead", cfg["k"])
        if V_Z.shape != (cfg["k"], d):
            raise ZhuntError(str(mask_path), f"mask multihead/k{cfg['k']} has shape {V_Z.shape}, expected "
                             f"{(cfg['k'], d)}")
        cache[key] = (V_Z, random_bases(cfg["k"], d, int(n_random), seed))
    return cache[key]
