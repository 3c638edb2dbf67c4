"""Exp. A's causal scores of Z at every decoder layer (the causal side of the layer sweep, issue 17).

:mod:`zhunt.experiments.layerpred` compares the weight-only prediction with where the data finds
Z. Its Phase 2 sweep is correlational; this module adds the causal side at every layer ``l``,
with the donor design of the interchange cells (:mod:`zhunt.experiments.patching_cells`) cut to
what a sweep can afford:

* pairs: base problem ``b`` in the target language, donor ``d(b)`` with a different key answer
  (:func:`zhunt.experiments.patching_design.donor_pairs`, the cells' seed and ``n_donors``);
* source: the **mean alignment**, the donor's prompt in the source language averaged over its
  non-special tokens at hidden index ``j = hidden_index(l, site)``, broadcast to every patched
  position of the base. That mean is the store's pooled vector
  (:meth:`zhunt.data.store.ActivationStore.pooled`, kept for every index whatever
  ``extraction.layers``), so the sweep needs no token rows;
* subspace: the multi-head Z of layer ``l`` at one k (the layer sweep's masks), the span
  interchange ``h <- h + (s - h) V_Z^T V_Z`` at the prompt positions and at the pair's common
  prefix, which the cells give the mean source row too (no training, no controls);
* scores, from one teacher-forced pass per layer (no patched generation;
  :func:`zhunt.experiments.patching_cells.score_pairs`, as the cells score): the clean runs of
  every base and donor are generated once and give the first answer position
  (:func:`zhunt.experiments.patching_cells.first_divergence`); at that position
  ``IIA`` = fraction of pairs whose patched argmax is the donor run's first answer token
  (over pairs whose clean runs diverge; Wilson interval, :func:`zhunt.experiments.patching_metrics.rate`)
  and ``NPE = (LD_patched - LD_clean) / (LD_donor-run - LD_clean)`` with
  ``LD = log p(donor run's token) - log p(base's token)`` (mean over the same pairs,
  percentile bootstrap interval), exactly the quantities of the cells' ``z`` rows.

The mean source here is float32 (the store's pooled vector) where a cell averages the float32
token rows in float64: the two agree to float32 rounding.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

import numpy as np
import pandas as pd

from zhunt.errors import ZhuntError

__all__ = ["ALIGNMENT", "SOURCE", "causal_sweep", "sweep_rows"]

log = logging.getLogger("zhunt.experiments.layer_causal")

#: The sweep's alignment and source design (fixed: issue 17's "donor design, mean alignment").
ALIGNMENT = "mean"
SOURCE = "donor"


def _donor_means(store, j: int, lang: str, donors) -> dict:
    """``donor -> (d,) float32``: each donor prompt's mean over its non-special tokens at index ``j``."""
    X = store.pooled(j, lang, "mean")
    row = {p: i for i, p in enumerate(store.prompt_ids(lang))}
    missing = sorted(set(donors) - set(row))
    if missing:
        raise ZhuntError(str(store.path), f"no {lang} prompt {missing[0]!r} in the activation store")
    return {p: np.asarray(X[row[p]], dtype=np.float32) for p in donors}


def sweep_rows(layer: int, site: str, k: int, direction: str, targets, clean: Mapping, patched: Mapping,
               *, seed: int = 0) -> dict:
    """One layer's row: IIA and NPE of the Z interchange over the pairs whose clean runs diverge.

    Parameters
    ----------
    layer, site, k, direction
        The row's key (``direction`` = ``"target<-source"``).
    targets : zhunt.experiments.patching_cells.PairTargets
        The pairs' first answer positions.
    clean : mapping
        ``ld_base`` and ``ld_donor`` (n_pairs,): LD of the clean base and of the donor run.
    patched : mapping
        ``first`` (n_pairs,) patched argmax and ``ld`` (n_pairs,) patched LD.
    seed : int
        Seed of the NPE bootstrap.

    Returns
    -------
    dict
        ``layer, site, hidden_index, k, alignment, direction, source, n_pairs, n_iia, iia, iia_lo,
        iia_hi, npe, npe_lo, npe_hi``.
    """
    from zhunt.experiments.patching_metrics import npe, rate
    from zhunt.models.site import hidden_index
    from zhunt.stats import bootstrap_ci

    fd = np.asarray(targets.differs, dtype=bool)
    donor_tok = np.array([dv[2] for dv in targets.div])
    hits = (np.asarray(patched["first"]) == donor_tok) & fd
    r = rate(hits[fd])
    e = npe(patched["ld"], clean["ld_base"], clean["ld_donor"])[fd]
    e = e[np.isfinite(e)]
    m, lo, hi = bootstrap_ci(e, seed=seed)
    return {"layer": int(layer), "site": site, "hidden_index": hidden_index(layer, site), "k": int(k),
            "alignment": ALIGNMENT, "direction": direction, "source": SOURCE, "n_pairs": int(fd.size),
            "n_iia": r[3], "iia": r[0], "iia_lo": r[1], "iia_hi": r[2], "npe": m, "npe_lo": lo, "npe_hi": hi}


def causal_sweep(ctx: Mapping, masks: Mapping[int, np.ndarray], k: int, *, site: str, direction: str,
                 n_donors: int = 1, seed: int = 0, max_new_tokens: int = 16, batch_size: int = 16) -> pd.DataFrame:
    """IIA and NPE of each layer's own Z, mean-aligned donor interchange (module docstring).

    Parameters
    ----------
    ctx : dict
        :func:`zhunt.experiments.patching_cells.cell_context` (model, prompts, ``store_path``).
    masks : mapping layer -> ndarray (k, d)
        ``V_Z`` of each decoder layer to sweep (orthonormal rows).
    k : int
        Rows of every mask.
    site : {"input", "output"}
    direction : str
        ``"target<-source"``, e.g. ``"en<-zh"``.
    n_donors, seed : int
        As for the interchange cells.
    max_new_tokens, batch_size : int
        Budget of the clean greedy runs; prompts per forward pass.

    Returns
    -------
    DataFrame, one row per layer
        :func:`sweep_rows`.
    """
    from zhunt.data.store import ActivationStore
    from zhunt.experiments.patching_cells import PairTargets, score_pairs
    from zhunt.experiments.patching_design import Cell, donor_pairs
    from zhunt.models.generation import SubspaceEdit, generate
    from zhunt.models.site import hidden_index

    t0 = time.perf_counter()
    tgt, src = Cell(site, 0, int(k), ALIGNMENT, direction, SOURCE).languages
    if not {tgt, src} <= set(ctx["languages"]):
        raise ZhuntError("study.patching.primary.direction",
                         f"{direction!r} needs languages {tgt}, {src}; the prompt set has {ctx['languages']}")
    pairs, unmatched = donor_pairs(ctx["problems"], ctx["key_answer"], seed=seed, n_donors=n_donors)
    if not pairs:
        raise ZhuntError("layer causal sweep", "no base-donor pair (need problems with different answers)")
    prompt = lambda p: ctx["prompt_of"][(p, tgt)]  # noqa: E731
    ids = sorted({p for pr in pairs for p in pr}, key=ctx["problems"].index)
    runs = generate(ctx["model"], ctx["tokenizer"], [prompt(p) for p in ids], max_new_tokens=int(max_new_tokens),
                    batch_size=int(batch_size), add_special_tokens=ctx["add_special"])
    targets = PairTargets.of(dict(zip(ids, runs)), pairs)
    n_p, idx = len(pairs), list(range(len(pairs)))
    base_prompts = [prompt(b) for b, _ in pairs]
    s = score_pairs(ctx, base_prompts + [prompt(d) for _, d in pairs], idx * 2, targets, None, batch_size=batch_size)
    clean = {"ld_base": s["ld"][:n_p], "ld_donor": s["ld"][n_p:]}
    rows = []
    with ActivationStore(ctx["store_path"]) as store:
        for l in sorted(masks):
            means = _donor_means(store, hidden_index(l, site), src, {d for _, d in pairs})
            V = np.asarray(masks[l], dtype=np.float32)
            edits = [SubspaceEdit(V, means[d], "span") for _, d in pairs]
            p = score_pairs(ctx, base_prompts, idx, targets, None, batch_size=batch_size,
                            layer_module=ctx["adapter"].layers[l], site=site, edits=edits)
            rows.append(sweep_rows(l, site, k, direction, targets, clean, p, seed=seed))
    log.info("causal sweep %s: %d layers, %d pairs (%d bases without a donor, %d diverging) in %.1fs", direction,
             len(rows), n_p, len(unmatched), int(np.sum(targets.differs)), time.perf_counter() - t0)
    return pd.DataFrame(rows)
