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

DAS sweep (:func:`das_sweep`)
-----------------------------
The same pairs and the same mean source with a *learned* k-dim subspace in place of Z: at each
layer of :func:`das_sweep_layers`, :func:`zhunt.experiments.das.fit_das` fits ``V`` on the pairs
whose base and donor are both in the ``train`` split
(:func:`zhunt.experiments.patching_design.heldout_split`, the cells' split) and whose clean runs
diverge, maximising ``log p(donor run's first answer token | base, V-interchange with the donor's
mean)`` with the common prefix teacher-forced and patched as in scoring. Z and the fitted V are then
scored on the ``heldout`` pairs (base in ``heldout``) with :func:`sweep_rows`, so each layer gets a
"best a linear k-dim subspace can do" next to "what the weight-derived Z does", on the same pairs.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zhunt.errors import ZhuntError

__all__ = ["ALIGNMENT", "SOURCE", "causal_sweep", "das_sweep", "das_sweep_layers", "sweep_rows"]

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


def _sweep_pairs(ctx: Mapping, k: int, *, site: str, direction: str, n_donors: int, seed: int,
                 max_new_tokens: int, batch_size: int) -> dict:
    """The pairs of the sweeps, their clean greedy runs and clean scores (module docstring).

    Returns
    -------
    dict
        ``pairs`` (list of (base, donor)), ``unmatched`` (bases without a donor), ``src`` (source
        language), ``targets`` (:class:`~zhunt.experiments.patching_cells.PairTargets`),
        ``base_prompts`` (one per pair), ``clean`` (``ld_base``, ``ld_donor``: (n_pairs,) each).
    """
    from zhunt.experiments.patching_cells import PairTargets, score_pairs
    from zhunt.experiments.patching_design import Cell, donor_pairs
    from zhunt.models.generation import generate

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
    return {"pairs": pairs, "unmatched": unmatched, "src": src, "targets": targets, "base_prompts": base_prompts,
            "clean": {"ld_base": s["ld"][:n_p], "ld_donor": s["ld"][n_p:]}}


def _interchange_row(ctx: Mapping, layer: int, V: np.ndarray, sources: Sequence, prompts: Sequence[str], targets,
                     clean: Mapping, *, site: str, k: int, direction: str, batch_size: int, seed: int) -> dict:
    """One layer's :func:`sweep_rows` for the span interchange along ``V`` (k, d) with one broadcast
    source ``(d,)`` per pair, from one teacher-forced pass over ``prompts`` (one per pair of ``targets``)."""
    from zhunt.experiments.patching_cells import score_pairs
    from zhunt.models.generation import SubspaceEdit

    edits = [SubspaceEdit(V, s, "span") for s in sources]
    p = score_pairs(ctx, prompts, list(range(len(prompts))), targets, None, batch_size=batch_size,
                    layer_module=ctx["adapter"].layers[layer], site=site, edits=edits)
    return sweep_rows(layer, site, k, direction, targets, clean, p, seed=seed)


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
    from zhunt.models.site import hidden_index

    t0 = time.perf_counter()
    sp = _sweep_pairs(ctx, k, site=site, direction=direction, n_donors=n_donors, seed=seed,
                      max_new_tokens=max_new_tokens, batch_size=batch_size)
    pairs, targets = sp["pairs"], sp["targets"]
    rows = []
    with ActivationStore(ctx["store_path"]) as store:
        for l in sorted(masks):
            means = _donor_means(store, hidden_index(l, site), sp["src"], {d for _, d in pairs})
            rows.append(_interchange_row(ctx, l, np.asarray(masks[l], dtype=np.float32), [means[d] for _, d in pairs],
                                         sp["base_prompts"], targets, sp["clean"], site=site, k=k,
                                         direction=direction, batch_size=batch_size, seed=seed))
    log.info("causal sweep %s: %d layers, %d pairs (%d bases without a donor, %d diverging) in %.1fs", direction,
             len(rows), len(pairs), len(sp["unmatched"]), int(np.sum(targets.differs)), time.perf_counter() - t0)
    return pd.DataFrame(rows)


def das_sweep_layers(num_layers: int, every: int, include=()) -> list[int]:
    """Decoder layers of the DAS sweep: ``0, every, 2 every, ...`` below ``num_layers``, plus ``include``.

    Parameters
    ----------
    num_layers : int
        Decoder layers ``L`` of the model.
    every : int
        Stride (1 = every layer).
    include : iterable of int
        Layers always swept (the predicted bottleneck, the configured patching layers).

    Returns
    -------
    list of int
        Sorted, unique, each in ``0 .. L - 1``.

    Raises
    ------
    ValueError
        ``every < 1`` or an ``include`` layer outside the model.
    """
    if int(every) < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    extra = {int(x) for x in include}
    bad = sorted(x for x in extra if not 0 <= x < num_layers)
    if bad:
        raise ValueError(f"layer {bad[0]} is outside the model's {num_layers} decoder layers")
    return sorted(set(range(0, int(num_layers), int(every))) | extra)


def _subset(targets, clean: Mapping, rows: Sequence[int]):
    """``targets`` and ``clean`` restricted to the pairs ``rows`` (in that order)."""
    from dataclasses import fields

    from zhunt.experiments.patching_cells import PairTargets

    t = PairTargets(**{f.name: [getattr(targets, f.name)[i] for i in rows] for f in fields(PairTargets)})
    return t, {name: np.asarray(v)[list(rows)] for name, v in clean.items()}


def das_sweep(ctx: Mapping, masks: Mapping[int, np.ndarray], k: int, *, site: str, direction: str,
              n_donors: int = 1, seed: int = 0, steps: int = 100, lr: float = 1e-2, das_batch_size: int = 16,
              init: str = "random", max_new_tokens: int = 16, batch_size: int = 16) -> pd.DataFrame:
    """DAS and Z at each layer of ``masks``: fitted on the train pairs, scored on the held-out ones.

    Parameters
    ----------
    ctx : dict
        :func:`zhunt.experiments.patching_cells.cell_context`.
    masks : mapping layer -> ndarray (k, d)
        ``V_Z`` of each layer to sweep (the DAS layers, :func:`das_sweep_layers`).
    k : int
        Dimension of Z and of the learned subspace.
    site, direction, n_donors, seed, max_new_tokens, batch_size
        As for :func:`causal_sweep` (the same pairs).
    steps, lr, das_batch_size : int, float, int
        Adam steps, learning rate and minibatch of :func:`zhunt.experiments.das.fit_das`
        (``seed`` is its ``random_state``).
    init : {"random", "z"}
        DAS's starting basis: Haar-random (as the cells' DAS) or the layer's ``V_Z``.

    Returns
    -------
    DataFrame, two rows per layer (``subspace`` = ``z``, ``das``)
        :func:`sweep_rows` over the held-out pairs, plus ``subspace, split, n_train, steps,
        final_loss`` (mean loss of the last 10 steps), ``overlap_z`` (Grassmann similarity of
        the fitted V with Z; 1 for the ``z`` row) and ``seconds`` (the fit's wall time).
        Without a diverging train pair nothing is fitted and the ``das`` row's scores are NaN.
    """
    from zhunt.data.store import ActivationStore
    from zhunt.experiments.das import fit_das
    from zhunt.experiments.patching_design import heldout_split
    from zhunt.models.site import hidden_index
    from zhunt.subspace import grassmann_similarity

    if init not in ("random", "z"):
        raise ValueError(f"init must be 'random' or 'z', got {init!r}")
    t0 = time.perf_counter()
    sp = _sweep_pairs(ctx, k, site=site, direction=direction, n_donors=n_donors, seed=seed,
                      max_new_tokens=max_new_tokens, batch_size=batch_size)
    pairs, targets = sp["pairs"], sp["targets"]
    split = heldout_split(ctx["problems"], seed=seed)
    train = [i for i, (b, d) in enumerate(pairs)
             if split[b] == "train" and split[d] == "train" and targets.differs[i]]
    held = [i for i, (b, _) in enumerate(pairs) if split[b] == "heldout"]
    if not held:
        raise ZhuntError("layer DAS sweep", "no pair with its base problem in the held-out split")
    h_targets, h_clean = _subset(targets, sp["clean"], held)
    h_prompts, h_donors = [sp["base_prompts"][i] for i in held], [pairs[i][1] for i in held]

    def scored(l, V, means):  # one layer's row over the held-out pairs
        return _interchange_row(ctx, l, V, [means[d] for d in h_donors], h_prompts, h_targets, h_clean, site=site,
                                k=k, direction=direction, batch_size=batch_size, seed=seed)

    rows = []
    with ActivationStore(ctx["store_path"]) as store:
        for l in sorted(masks):
            means = _donor_means(store, hidden_index(l, site), sp["src"], {d for _, d in pairs})
            V_Z = np.asarray(masks[l], dtype=np.float32)
            z = scored(l, V_Z, means)
            rows.append({**z, "subspace": "z", "split": "heldout", "n_train": len(train), "steps": 0,
                         "final_loss": np.nan, "overlap_z": 1.0, "seconds": 0.0})
            if not train:  # nothing to learn from: the das row says so with NaN scores
                log.warning("DAS sweep L%d: no diverging pair in the train split; not fitted", l)
                nan = dict.fromkeys(("iia", "iia_lo", "iia_hi", "npe", "npe_lo", "npe_hi"), np.nan)
                rows.append({**rows[-1], **nan, "n_iia": 0, "subspace": "das", "overlap_z": np.nan})
                continue
            fit = fit_das(ctx["model"], ctx["tokenizer"], [sp["base_prompts"][i] for i in train],
                          [means[pairs[i][1]] for i in train], [targets.div[i][2] for i in train], layer=l,
                          site=site, k=int(k), steps=int(steps), lr=float(lr), batch_size=int(das_batch_size),
                          init=V_Z if init == "z" else None, random_state=int(seed),
                          add_special_tokens=ctx["add_special"], prefixes=[targets.prefix[i] for i in train],
                          patch_prefix=True)
            rows.append({**scored(l, fit.basis, means), "subspace": "das", "split": "heldout",
                         "n_train": len(train), "steps": int(steps), "final_loss": float(np.mean(fit.losses[-10:])),
                         "overlap_z": float(grassmann_similarity(fit.basis, V_Z)), "seconds": float(fit.seconds)})
            log.info("DAS sweep L%d: %d train pairs, loss %.3f -> %.3f in %.1fs; held-out IIA Z %.2f, DAS %.2f", l,
                     len(train), fit.losses[0], rows[-1]["final_loss"], fit.seconds, z["iia"], rows[-1]["iia"])
    log.info("DAS sweep %s: %d layers in %.1fs", direction, len(masks), time.perf_counter() - t0)
    return pd.DataFrame(rows)
