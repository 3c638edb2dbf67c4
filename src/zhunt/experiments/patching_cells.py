"""Exp. A, cells: run one interchange cell and write its per-(pair, subspace) records.

One cell (:class:`zhunt.experiments.patching_design.Cell`) = one Snakemake job. For every
base–donor pair (:func:`zhunt.experiments.patching_design.donor_pairs`) and every subspace
(:func:`zhunt.experiments.patching_design.pair_edits`) at hidden index
``j = hidden_index(layer, site)``:

1. the clean target-language runs of every base and donor problem are generated
   once (greedy, :func:`zhunt.models.generation.generate`): the base's own output and
   the *donor run* (the counterfactual target: the model's own output on the
   donor's prompt in the target language);
2. the pair's *first answer position* (:func:`first_divergence`): the two clean
   continuations ``c_b`` (base) and ``c_d`` (donor run) share a longest common
   prefix ``a`` (``prefix_len = len(a)``, often a format token); the first
   answer tokens are ``c_b[len(a)]`` and ``c_d[len(a)]``, the first tokens
   where the two runs diverge;
3. a clean teacher-forced pass (:func:`zhunt.models.generation.score`) over
   the base and the donor run of every pair, ``a`` forced after the prompt,
   scores them and records their states at the site at ``a``'s positions;
4. the patch covers the prompt *and* ``a``
   (:func:`zhunt.experiments.patching_design.extend_to_prefix`: the aligned
   donor's own prefix states, or the mean source row for ``mean`` / ``ot``),
   because the first answer token is read after ``a``: left unpatched, ``a``'s
   own states below the site still read the base prompt and even the full
   interchange would not reproduce the donor run;
5. every patched base run is generated with its edit at the prompt positions
   (extracted answer and its script: :func:`zhunt.data.answers.answer_span`,
   :func:`zhunt.data.answers.answer_language`);
6. a patched teacher-forced pass, ``a`` forced and patched, gives at the
   position after ``a`` the log-probabilities of the base's and the donor
   run's first answer tokens, the argmax (the patched first answer token),
   the probability mass of target-script and other-script tokens, and the
   teacher-forced log p of the base's and the donor run's whole
   continuations. Pairs whose clean runs never diverge (identical runs) have
   no first answer position: their tokens are ``-1`` and their LD, NPE and
   language effect are NaN.

The records carry the cell's key columns (``site, hidden_index, layer, k,
alignment, direction, source``) and the per-row quantities of
:mod:`zhunt.experiments.patching_metrics`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zhunt.errors import ZhuntError
from zhunt.experiments.patching_design import (Cell, donor_pairs, extend_to_prefix, heldout_split,
                                               interchange_source, pair_bases, pair_edits)

__all__ = ["script_groups", "answer_of", "first_divergence", "cell_context", "cell_pairs", "CellBases",
           "ablation_layers", "read_cell_bases", "cell_rows", "PairTargets", "score_pairs", "pair_record",
           "ablation_rows", "cell_records", "fit_cell_das"]

log = logging.getLogger("zhunt.experiments.patching")


def script_groups(tokenizer, langs: Sequence[str]) -> np.ndarray:
    """``(G, V)`` vocabulary masks: tokens whose text holds the script of each language.

    ``zh``: a CJK ideograph; any other language: a Latin letter
    (:func:`zhunt.data.language_id.classify_language` of the decoded token is ``zh`` /
    ``en``, or ``mixed``). Every token is decoded on its own (special tokens kept), by the
    fast tokenizer's Rust decoder when there is one, and the whole vocabulary is tagged at once
    (:func:`zhunt.data.language_id.classify_languages`).
    """
    from zhunt.data.language_id import classify_languages

    V = len(tokenizer)
    tags = np.asarray(classify_languages(_decoded_tokens(tokenizer, V)), dtype=object)
    out = np.zeros((len(langs), V), dtype=bool)
    for g, lg in enumerate(langs):
        out[g] = (tags == ("zh" if lg == "zh" else "en")) | (tags == "mixed")
    return out


def _decoded_tokens(tokenizer, V: int) -> list[str]:
    """Token ``i``'s text for ``i < V``, as ``tokenizer.batch_decode([[i] for i in range(V)])`` gives it up to
    the clean-up of spaces before punctuation (which changes no letter).

    The fast tokenizer's Rust decoder takes the ids as one ``(V, 1)`` array: no ``V`` Python lists (whose
    allocation alone triggers full garbage collections over a loaded model's objects).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        try:
            return backend.decode_batch(np.arange(V, dtype=np.uint32)[:, None], skip_special_tokens=False)
        except TypeError:  # an older tokenizers that wants lists
            pass
    return tokenizer.batch_decode([[i] for i in range(V)])


def answer_of(text: str, target: str) -> tuple[int | None, str]:
    """``(extracted answer, script of its span)`` of a continuation (number words of its own script)."""
    from zhunt.data.answers import answer_language, cut_at_next_question, extract_answer
    from zhunt.data.language_id import classify_language

    out_lang = classify_language(cut_at_next_question(text))
    lang = "zh" if out_lang == "zh" else (target if target != "zh" else "en") if out_lang == "en" else None
    return extract_answer(text, lang), answer_language(text, lang)


def first_divergence(base: Sequence[int], donor: Sequence[int]) -> tuple[int, int, int]:
    """``(L, base_token, donor_token)``: where two clean continuations first differ.

    ``L`` is the length of their longest common prefix ``a`` (``base[:L] ==
    donor[:L]``); the first answer tokens are ``base[L]`` and ``donor[L]``,
    which differ by construction. ``-1`` stands for a run that ends at ``L``
    (both do when the runs are identical, then there is no answer position).
    """
    L = 0
    while L < len(base) and L < len(donor) and int(base[L]) == int(donor[L]):
        L += 1
    return L, int(base[L]) if L < len(base) else -1, int(donor[L]) if L < len(donor) else -1


def _other_language(target: str, languages: Sequence[str]) -> str:
    others = [lg for lg in languages if lg != target]
    return "zh" if target != "zh" and "zh" in others else others[0]


def cell_context(model_dir, store_path, prompts_path, languages: Sequence[str], templates_path, family: str,
                 *, threads: int | None = None) -> dict:
    """Model, tokenizer, rendered prompts and the store path shared by a cell's stages.

    Returns
    -------
    dict
        ``model, tokenizer, adapter, prompt_of`` (``(problem, lang) -> prompt``),
        ``key_answer``, ``category``, ``problems``, ``add_special``,
        ``languages``, ``store_path``.
    """
    from zhunt.models import get_adapter, load_model
    from zhunt.data.prompts import load_prompt_table, load_templates, render_prompts, to_long

    if threads:
        import torch

        torch.set_num_threads(int(threads))
    table = load_prompt_table(prompts_path, languages=list(languages))
    long = to_long(table, list(languages))
    templates = load_templates(templates_path)
    model, tok = load_model(model_dir)
    long = long.assign(prompt=render_prompts(long, family, templates, tokenizer=tok))
    return {"model": model, "tokenizer": tok, "adapter": get_adapter(model),
            "prompt_of": {(i, lg): p for i, lg, p in zip(long["id"], long["lang"], long["prompt"])},
            "key_answer": dict(zip(table["id"], table["answer"].astype(int))),
            "category": dict(zip(table["id"], table["category"])), "problems": list(table["id"]),
            "add_special": templates["families"][family]["kind"] != "chat", "languages": list(languages),
            "store_path": store_path}


def cell_pairs(ctx: Mapping, cell: Cell, *, n_donors: int = 1, seed: int = 0):
    """The cell's base–donor pairs and, per pair, the base's clean states ``H`` and the source ``S``.

    Returns
    -------
    pairs : list of (base, donor)
    unmatched : list of str
        Bases without enough donors (:func:`zhunt.experiments.patching_design.donor_pairs`).
    states : list of (H, S)
        ``(T, d)`` float64 arrays at ``cell.hidden_index`` (special tokens dropped).
    """
    from zhunt.experiments.patching import _clouds
    from zhunt.data.store import ActivationStore

    tgt, src = cell.languages
    if not {tgt, src} <= set(ctx["languages"]):
        raise ZhuntError("patching.directions", f"cell {cell.name} needs languages {tgt}, {src}; "
                         f"have {ctx['languages']}")
    j = cell.hidden_index
    with ActivationStore(ctx["store_path"]) as store:
        group = None
        if cell.alignment == "aligned":
            group = lambda p: (ctx["category"][p], len(store.prompt_token_ids(p, tgt)))  # noqa: E731
        pairs, unmatched = donor_pairs(ctx["problems"], ctx["key_answer"], seed=seed, n_donors=n_donors, group=group)
        if not pairs:
            raise ZhuntError(f"cell {cell.name}", "no base-donor pair (need problems with different answers"
                             + (", the same template and token length)" if group else ")"))
        states = []
        for b, d in pairs:
            H = _clouds(store, b, tgt, j).astype(np.float64)
            states.append((H, interchange_source(cell.alignment, _clouds(store, d, src, j), H)))
    return pairs, unmatched, states


@dataclass(frozen=True)
class CellBases:
    """The bases one cell patches or ablates along (rows orthonormal, float64).

    Attributes
    ----------
    V_Z : ndarray (k, d)
        Z of the cell's layer (the mask file).
    V_das : ndarray (k, d) or None
        The learned DAS basis of (site, layer, k); None = no ``das`` rows.
    das_overlap_z : float
        Grassmann similarity of ``V_das`` with ``V_Z`` as fitted (the DAS file's ``overlap_z``).
    M_s : dict int -> ndarray (r, d), or None
        ``M_s`` of every layer of the ablation group at the cell's site; None = no ``ms_ablation`` rows.
    M_s_cell : ndarray (r, d) or None
        ``M_s`` at the cell's own layer and site (the DAS overlap and the ablation's ``||Δh||``).
    """

    V_Z: np.ndarray
    V_das: np.ndarray | None = None
    das_overlap_z: float = float("nan")
    M_s: dict | None = None
    M_s_cell: np.ndarray | None = None


def ablation_layers(layer: int, offsets: Sequence[int], n_layers: int) -> list[int]:
    """The M_s ablation group of a cell: ``layer + offset`` for every offset, inside ``0..n_layers-1``."""
    return sorted({int(layer) + int(o) for o in offsets if 0 <= int(layer) + int(o) < int(n_layers)})


def read_cell_bases(cell: Cell, d: int, mask_path, *, kind: str = "multihead", das_path=None, ms_path=None,
                    ms_layers: Sequence[int] = (), ms_pooling: str = "mean") -> CellBases:
    """Read a cell's bases: Z (``mask_path``), DAS (``das_path``, optional) and M_s (``ms_path``, optional).

    An unfitted DAS file (basis ``(0, d)``, :func:`fit_cell_das`) gives ``V_das = None`` (no das rows).
    ``M_s`` comes from :func:`zhunt.experiments.ablation.read_ms_basis` at ``cell.site`` and ``ms_pooling``.
    """
    from zhunt.experiments.ablation import read_ms_basis
    from zhunt.weights.masks import read_mask

    V_Z = read_mask(mask_path, kind, cell.k)
    if V_Z.shape != (cell.k, d):
        raise ZhuntError(str(mask_path), f"mask {kind}/k{cell.k} has shape {V_Z.shape}, expected {(cell.k, d)}")
    V_das, overlap = None, float("nan")
    if das_path is not None:
        import h5py

        with h5py.File(das_path, "r") as f:
            V_das = np.asarray(f["basis"], dtype=np.float64)
            overlap = float(f.attrs["overlap_z"])
        if V_das.shape[0] == 0:  # not fitted (no diverging train pair, fit_cell_das): no das rows
            log.warning("cell %s: the DAS basis %s was not fitted; no das rows", cell.name, das_path)
            V_das = None
    M_s = M_cell = None
    if ms_path is not None:
        M_s = {l: read_ms_basis(ms_path, l, cell.site, ms_pooling) for l in ms_layers} or None
        M_cell = read_ms_basis(ms_path, cell.layer, cell.site, ms_pooling)
    return CellBases(V_Z, V_das, overlap, M_s, M_cell)


def cell_rows(pairs, states, split: Mapping, bases: CellBases, k: int, seed: int = 0) -> tuple[list, list]:
    """Per pair the ``none`` row and one row per patched subspace (:func:`pair_edits`).

    Returns
    -------
    rows : list of dict
        ``pair, problem, donor, split, subspace, dh_norm``.
    edits : list
        The row's :class:`zhunt.models.generation.SubspaceEdit` (None for ``none``).
    """
    rows, edits = [], []
    d = bases.V_Z.shape[1]
    for pi, ((b, dn), (H, S)) in enumerate(zip(pairs, states)):
        V_R = pair_bases(k, d, pi, seed)
        ed = pair_edits(S, H, bases.V_Z, V_R, bases.V_das if split[b] == "heldout" else None)
        rows.append({"pair": pi, "problem": b, "donor": dn, "split": split[b], "subspace": "none", "dh_norm": 0.0})
        edits.append(None)
        for name, (e, norm) in ed.items():
            rows.append({"pair": pi, "problem": b, "donor": dn, "split": split[b], "subspace": name,
                         "dh_norm": norm})
            edits.append(e)
    return rows, edits


@dataclass(frozen=True)
class PairTargets:
    """Per pair: the first answer position and what the teacher-forced pass forces and scores there.

    ``div[pi] = (L, base_token, donor_token)`` (:func:`first_divergence`),
    ``differs[pi]`` = both runs continue past ``L``; ``prefix`` = the common
    prefix forced after the prompt, ``candidates`` = the two first answer
    tokens (empty for identical runs), ``continuations`` = the two runs after
    the prefix (their LD: the prefix cancels).
    """

    div: list
    differs: list
    prefix: list
    candidates: list
    continuations: list

    @classmethod
    def of(cls, clean: Mapping, pairs) -> "PairTargets":
        div = [first_divergence(clean[b]["token_ids"], clean[d]["token_ids"]) for b, d in pairs]
        differs = [bt >= 0 and dt >= 0 for _, bt, dt in div]
        L = [dv[0] if ok else 0 for dv, ok in zip(div, differs)]  # identical runs: nothing to score there
        return cls(div, differs, [clean[b]["token_ids"][:n] for (b, _), n in zip(pairs, L)],
                   [list(dv[1:]) if ok else [] for dv, ok in zip(div, differs)],
                   [[clean[b]["token_ids"][n:], clean[d]["token_ids"][n:]] for (b, d), n in zip(pairs, L)])


def score_pairs(ctx: Mapping, prompts: Sequence[str], pair_index: Sequence[int], targets: PairTargets, groups, *,
                batch_size: int, layer_module=None, site: str = "input", edits=None,
                prefix_states: bool = False) -> dict:
    """One teacher-forced pass (:func:`zhunt.models.generation.score`) of prompts scored at their pair's targets.

    The pair's common prefix is forced after each prompt and patched like
    the prompt (``patch_prefix=True``): an edit's per-token source holds the
    prompt rows and then the prefix rows (:func:`zhunt.experiments.patching_design.extend_to_prefix`).

    Returns
    -------
    dict of ndarray (n,)
        ``first`` (argmax at the first answer position), ``ld`` = log p(donor
        run's token) - log p(base's token) (NaN where the runs never diverge),
        ``ld_seq`` (the same with the whole continuations) and ``lang`` =
        log m_target - log m_other (script masses; these two only with
        ``groups``, the ``(G, V)`` script masks of :func:`script_groups`;
        ``groups=None`` reads the first answer position only); with ``prefix_states``
        also ``prefix_states`` (per prompt the ``(m, d)`` stream at the site
        at the prefix's patched positions).
    """
    from zhunt.models.generation import score

    sc = score(ctx["model"], ctx["tokenizer"], list(prompts), candidates=[targets.candidates[p] for p in pair_index],
               continuations=[targets.continuations[p] for p in pair_index] if groups is not None else None,
               prefixes=[targets.prefix[p] for p in pair_index], token_groups=groups, layer_module=layer_module,
               site=site, edits=edits, batch_size=int(batch_size), add_special_tokens=ctx["add_special"],
               patch_prefix=True, prefix_states=prefix_states)
    lpc = np.full((len(prompts), 2), np.nan)  # (rows, base / donor token); NaN where the runs never diverge
    lpc[:, :sc["lp_candidates"].shape[1]] = sc["lp_candidates"]
    out = {"first": sc["first_argmax"], "ld": lpc[:, 1] - lpc[:, 0]}
    if groups is not None:
        out["ld_seq"] = sc["lp_continuations"][:, 1] - sc["lp_continuations"][:, 0]
        out["lang"] = sc["lp_groups"][:, 0] - sc["lp_groups"][:, 1]
    if prefix_states:
        out["prefix_states"] = sc["prefix_states"]
    return out


def _take(s: Mapping, q: int) -> dict:
    return {name: v[q] for name, v in s.items()}


def pair_record(row: Mapping, targets: PairTargets, clean: Mapping, key_answer: Mapping, tgt: str,
                base: Mapping, donor: Mapping, patched: Mapping, text: str | None) -> dict:
    """The per-row quantities of :mod:`zhunt.experiments.patching_metrics` for one (pair, subspace) row.

    ``base``, ``donor``, ``patched`` are the row's pair's clean base, donor run
    and this row's entries of :func:`score_pairs`; ``text`` is the patched
    continuation (None: the clean base run, the ``none`` row).
    """
    pi, b, d = row["pair"], row["problem"], row["donor"]
    base_ans, base_lang = answer_of(clean[b]["text"], tgt)
    donor_ans, _ = answer_of(clean[d]["text"], tgt)
    ans, ans_lang = (base_ans, base_lang) if text is None else answer_of(text, tgt)
    prefix_len, base_tok, donor_tok = targets.div[pi]
    fd = targets.differs[pi]
    first_tok = int(patched["first"]) if fd else -1
    den = donor["ld"] - base["ld"]
    return {"prefix_len": prefix_len, "base_token": base_tok, "donor_token": donor_tok, "first_token": first_tok,
            "first_differs": fd, "iia_hit": fd and first_tok == donor_tok,
            "base_answer": base_ans, "donor_answer": donor_ans, "answer": ans, "key_answer": key_answer[d],
            "value_differs": base_ans is not None and donor_ans is not None and base_ans != donor_ans,
            "value_hit": ans is not None and ans == donor_ans, "true_hit": ans is not None and ans == key_answer[d],
            "ld_clean": base["ld"], "ld_donor_run": donor["ld"], "ld": patched["ld"],
            "npe": (patched["ld"] - base["ld"]) / den if fd and den != 0 else np.nan,
            "ld_seq": patched["ld_seq"] - base["ld_seq"],
            "lang_effect": patched["lang"] - base["lang"] if fd else np.nan,
            "answer_lang": ans_lang, "base_answer_lang": base_lang,
            "text": clean[b]["text"] if text is None else text}


def ablation_rows(ctx: Mapping, cell: Cell, pairs, states, split: Mapping, bases: CellBases, lams: Sequence[float],
                  targets: PairTargets, groups, gen_kw: Mapping) -> list[tuple[dict, dict, str]]:
    """The ``ms_ablation`` rows: per ``lam``, every pair's base run under ``h <- h - lam P_{M_s} h``.

    The ablation (:func:`zhunt.experiments.ablation.ablate_subspace`) acts at the cell's site of every
    layer of ``bases.M_s`` and at every position (prompt, generated and teacher-forced tokens); the
    base is generated once per ``lam`` and scored at its pair's targets like a patched row.
    ``dh_norm = lam ||H M_s^T||_F`` over the base's clean prompt states ``H`` at the cell's layer
    (the push at the cell's own stream; NaN when the cell's layer is not in the group).

    Returns
    -------
    list of (row, scores, text)
        ``row`` as :func:`cell_rows` plus ``lam``; ``scores`` = its :func:`score_pairs` entries.
    """
    from zhunt.experiments.ablation import ablate_subspace
    from zhunt.models.generation import generate

    tgt = cell.languages[0]
    bases_ids = list(dict.fromkeys(b for b, _ in pairs))
    prompts = [ctx["prompt_of"][(b, tgt)] for b, _ in pairs]
    out = []
    for lam in lams:
        with ablate_subspace(ctx["model"], bases.M_s, sorted(bases.M_s), site=cell.site, lam=float(lam)):
            g = generate(ctx["model"], ctx["tokenizer"], [ctx["prompt_of"][(b, tgt)] for b in bases_ids], **gen_kw)
            s = score_pairs(ctx, prompts, range(len(pairs)), targets, groups, batch_size=gen_kw["batch_size"])
        text = {b: x["text"] for b, x in zip(bases_ids, g)}
        for pi, ((b, d), (H, _)) in enumerate(zip(pairs, states)):
            norm = float(lam) * float(np.linalg.norm(H @ bases.M_s_cell.T)) if cell.layer in bases.M_s else np.nan
            row = {"pair": pi, "problem": b, "donor": d, "split": split[b], "subspace": "ms_ablation",
                   "dh_norm": norm, "lam": float(lam)}
            out.append((row, _take(s, pi), text[b]))
    return out


def cell_records(ctx: Mapping, cell: Cell, bases: CellBases, *, n_donors: int = 1, seed: int = 0,
                 max_new_tokens: int = 16, batch_size: int = 16, ms_lams: Sequence[float] = ()) -> pd.DataFrame:
    """Run one cell: its records, one row per (pair, subspace) (the module docstring's steps 1-6).

    Parameters
    ----------
    ctx : dict
        :func:`cell_context`.
    cell : Cell
    bases : CellBases
        :func:`read_cell_bases`; ``V_das`` rows are scored on the ``heldout`` pairs only, ``M_s``
        gives one ``ms_ablation`` row per pair and ``ms_lams`` entry (column ``lam``).
    n_donors : int
        Donors per base problem.
    seed : int
        Seed of the donor permutation, of the random bases and of the DAS split.
    max_new_tokens, batch_size : int
        Greedy generation budget and prompts per batch.
    """
    from zhunt.models.generation import generate

    t0 = time.perf_counter()
    model, tok, layer = ctx["model"], ctx["tokenizer"], ctx["adapter"].layers[cell.layer]
    tgt, src = cell.languages
    prompt_of = ctx["prompt_of"]
    split = heldout_split(ctx["problems"], seed=seed)
    pairs, unmatched, states = cell_pairs(ctx, cell, n_donors=n_donors, seed=seed)
    gen_kw = dict(max_new_tokens=int(max_new_tokens), batch_size=int(batch_size), add_special_tokens=ctx["add_special"])
    clean_ids = sorted({p for pr in pairs for p in pr}, key=ctx["problems"].index)
    clean = dict(zip(clean_ids, generate(model, tok, [prompt_of[(p, tgt)] for p in clean_ids], **gen_kw)))
    targets = PairTargets.of(clean, pairs)
    groups = script_groups(tok, [tgt, _other_language(tgt, ctx["languages"])])
    n_p = len(pairs)
    # the clean pass: per pair the base and the donor run, with their states at the common prefix
    s0 = score_pairs(ctx, [prompt_of[(b, tgt)] for b, _ in pairs] + [prompt_of[(d, tgt)] for _, d in pairs],
                     list(range(n_p)) * 2, targets, groups, batch_size=batch_size, layer_module=layer, site=cell.site,
                     prefix_states=True)
    n_prompt = [H.shape[0] for H, _ in states]
    states = [extend_to_prefix(cell.alignment, S, H, s0["prefix_states"][pi], s0["prefix_states"][n_p + pi])[::-1]
              for pi, (H, S) in enumerate(states)]  # (H, S) over prompt + prefix
    rows, edits = cell_rows(pairs, states, split, bases, cell.k, seed)
    patched = [i for i, e in enumerate(edits) if e is not None]
    g = generate(model, tok, [prompt_of[(rows[i]["problem"], tgt)] for i in patched], layer_module=layer,
                 edits=[edits[i].head(n_prompt[rows[i]["pair"]]) for i in patched], site=cell.site, **gen_kw)
    text = {i: x["text"] for i, x in zip(patched, g)}
    s1 = score_pairs(ctx, [prompt_of[(rows[i]["problem"], tgt)] for i in patched], [rows[i]["pair"] for i in patched],
                     targets, groups, batch_size=batch_size, layer_module=layer, site=cell.site,
                     edits=[edits[i] for i in patched])
    pos = {i: q for q, i in enumerate(patched)}
    scored = [(r, _take(s1, pos[i]) if i in pos else _take(s0, r["pair"]), text.get(i))  # none: the clean base
              for i, r in enumerate(rows)]
    if bases.M_s is not None and len(ms_lams):
        scored += ablation_rows(ctx, cell, pairs, states, split, bases, ms_lams, targets, groups, gen_kw)
    rec = pd.DataFrame([{**cell.key(), "target_lang": tgt, "source_lang": src, **{c: v for c, v in r.items()
                                                                                 if c != "lam"},
                         **pair_record(r, targets, clean, ctx["key_answer"], tgt, _take(s0, r["pair"]),
                                       _take(s0, n_p + r["pair"]), sc, t)} for r, sc, t in scored])
    rec = _with_subspace_columns(rec, bases, [r.get("lam", np.nan) for r, _, _ in scored])
    log.info("cell %s: %d pairs (%d bases without a donor), %d rows in %.1fs", cell.name, n_p, len(unmatched),
             len(rec), time.perf_counter() - t0)
    return rec


def _with_subspace_columns(rec: pd.DataFrame, bases: CellBases, lam: Sequence[float]) -> pd.DataFrame:
    """The das rows' overlaps with Z and M_s (:func:`zhunt.experiments.das.subspace_overlap`); the ``lam`` column."""
    from zhunt.experiments.das import subspace_overlap

    if bases.V_das is not None:
        is_das = rec["subspace"] == "das"
        rec["overlap_z"] = np.where(is_das, bases.das_overlap_z, np.nan)
        if bases.M_s_cell is not None:
            ov_ms, ang_ms = subspace_overlap(bases.V_das, bases.M_s_cell)
            rec["overlap_ms"] = np.where(is_das, ov_ms, np.nan)
        rec["angle_z_deg_median"] = np.where(is_das, subspace_overlap(bases.V_das, bases.V_Z)[1], np.nan)
        if bases.M_s_cell is not None:
            rec["angle_ms_deg_median"] = np.where(is_das, ang_ms, np.nan)
    if bases.M_s is not None:
        rec["lam"] = np.asarray(lam, dtype=float)
    for c in ("base_answer", "donor_answer", "answer"):
        rec[c] = rec[c].astype("Int64")
    return rec


def das_training_pairs(ctx: Mapping, cell: Cell, *, n_donors: int = 1, seed: int = 0, max_new_tokens: int = 16,
                       batch_size: int = 16) -> dict:
    """The DAS training data of an ``aligned`` same-language cell.

    Pairs (:func:`cell_pairs`) whose base *and* donor are in the ``train``
    split (:func:`zhunt.experiments.patching_design.heldout_split`) and whose
    clean greedy runs diverge (:func:`first_divergence`).

    Returns
    -------
    dict
        ``texts`` (base prompts), ``sources`` ((T + m, d) float32: the donor's
        states at the prompt's and then at the common prefix's patched
        positions, :func:`zhunt.experiments.patching_design.extend_to_prefix`),
        ``targets`` (the donor run's first answer token), ``prefixes`` (the
        common prefix, teacher-forced and patched like the prompt); all empty
        when no train pair diverges.
    """
    from zhunt.models.generation import generate, score

    tgt = cell.languages[0]
    pairs, _, states = cell_pairs(ctx, cell, n_donors=n_donors, seed=seed)
    split = heldout_split(ctx["problems"], seed=seed)
    train = [i for i, (b, d) in enumerate(pairs) if split[b] == "train" and split[d] == "train"]
    if not train:
        raise ZhuntError(f"cell {cell.name}", "no template-aligned pair in the DAS train split")
    prompt = lambda p: ctx["prompt_of"][(p, tgt)]  # noqa: E731
    ids = sorted({p for i in train for p in pairs[i]}, key=ctx["problems"].index)
    runs = generate(ctx["model"], ctx["tokenizer"], [prompt(p) for p in ids], max_new_tokens=int(max_new_tokens),
                    batch_size=int(batch_size), add_special_tokens=ctx["add_special"])
    clean = {p: r["token_ids"] for p, r in zip(ids, runs)}
    div = {i: first_divergence(clean[pairs[i][0]], clean[pairs[i][1]]) for i in train}
    train = [i for i in train if div[i][1] >= 0 and div[i][2] >= 0]
    prefixes = [clean[pairs[i][0]][:div[i][0]] for i in train]
    pre = score(ctx["model"], ctx["tokenizer"], [prompt(pairs[i][1]) for i in train], prefixes=prefixes,
                layer_module=ctx["adapter"].layers[cell.layer], site=cell.site, prefix_states=True,
                batch_size=int(batch_size), add_special_tokens=ctx["add_special"])["prefix_states"] if train else []
    sources = [extend_to_prefix("aligned", states[i][1], states[i][0], p, p)[0].astype(np.float32)
               for i, p in zip(train, pre)]
    return {"texts": [prompt(pairs[i][0]) for i in train], "sources": sources, "targets": [div[i][2] for i in train],
            "prefixes": prefixes}


def fit_cell_das(ctx: Mapping, cell: Cell, V_Z: np.ndarray, *, n_donors: int = 1, seed: int = 0, steps: int = 200,
                 lr: float = 1e-2, batch_size: int = 16, max_new_tokens: int = 16,
                 das_batch_size: int = 16) -> tuple[dict, dict]:
    """Fit the DAS subspace of one (site, layer, k) on the train split (:func:`das_training_pairs`).

    :func:`zhunt.experiments.das.fit_das` learns the basis from the
    template-aligned same-language pairs of ``cell`` (an ``aligned`` cell);
    every cell then scores it on its ``heldout`` pairs like any other subspace.
    ``batch_size`` is the forward batch of the clean runs that make the training pairs,
    ``das_batch_size`` the Adam minibatch of the fit (config ``study.patching.das.batch_size``),
    so a change of the forward batch leaves the optimisation alone.

    Returns
    -------
    arrays : dict
        ``basis`` (k, d) float32, ``losses`` (steps,), ``cos_angles_z``
        (cosines of the principal angles with ``V_Z``). Without a diverging
        train pair nothing is fitted: ``basis`` is ``(0, d)``, the others empty.
    attrs : dict
        ``site, layer, k, hidden_index, n_train, steps, lr, seconds,
        final_loss, overlap_z`` (Grassmann similarity with ``V_Z``; NaN and
        ``n_train = steps = 0`` when not fitted).
    """
    from zhunt.experiments.das import fit_das
    from zhunt.subspace import grassmann_similarity, principal_angles

    data = das_training_pairs(ctx, cell, n_donors=n_donors, seed=seed, max_new_tokens=max_new_tokens,
                              batch_size=batch_size)
    attrs = {"site": cell.site, "layer": cell.layer, "k": cell.k, "hidden_index": cell.hidden_index}
    if not data["texts"]:  # nothing to learn from: an empty basis, and no das rows in the cells
        log.warning("DAS %s L%d k=%d: no pair of the train split whose clean runs diverge; not fitted", cell.site,
                    cell.layer, cell.k)
        attrs.update(n_train=0, steps=0, lr=float(lr), seconds=0.0, final_loss=float("nan"), overlap_z=float("nan"))
        return {"basis": np.zeros((0, V_Z.shape[1]), dtype=np.float32), "losses": np.zeros(0),
                "cos_angles_z": np.zeros(0)}, attrs
    fit = fit_das(ctx["model"], ctx["tokenizer"], data["texts"], data["sources"], data["targets"], layer=cell.layer,
                  site=cell.site, k=cell.k, steps=int(steps), lr=float(lr), batch_size=int(das_batch_size),
                  random_state=int(seed), add_special_tokens=ctx["add_special"], prefixes=data["prefixes"],
                  patch_prefix=True)
    attrs.update(n_train=len(data["texts"]), steps=int(steps), lr=float(lr), seconds=float(fit.seconds),
                 final_loss=float(np.mean(fit.losses[-10:])), overlap_z=float(grassmann_similarity(fit.basis, V_Z)))
    log.info("DAS %s L%d k=%d: %d train pairs, loss %.3f -> %.3f, overlap with Z %.3f, %.1fs", cell.site,
             cell.layer, cell.k, attrs["n_train"], fit.losses[0], attrs["final_loss"], attrs["overlap_z"],
             fit.seconds)
    return {"basis": np.asarray(fit.basis, dtype=np.float32), "losses": np.asarray(fit.losses, dtype=np.float64),
            "cos_angles_z": np.cos(principal_angles(fit.basis, V_Z))}, attrs
