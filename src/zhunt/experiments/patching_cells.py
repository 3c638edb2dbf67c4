"""Exp. A, cells: run one interchange cell and write its per-(pair, subspace) records.

One cell (:class:`zhunt.experiments.patching_design.Cell`) = one Snakemake job. For every
base–donor pair (:func:`zhunt.experiments.patching_design.donor_pairs`) and every subspace
(:func:`zhunt.experiments.patching_design.pair_edits`) at hidden index
``j = hidden_index(layer, site)``:

1. the clean target-language runs of every base and donor problem are generated
   once (greedy, :func:`zhunt.models.generation.generate`): the base's own output and
   the *donor run* (the counterfactual target: the model's own output on the
   donor's prompt in the target language);
2. every patched base run is generated with its edit at the site (extracted
   answer and its script: :func:`zhunt.data.answers.answer_span`,
   :func:`zhunt.data.answers.answer_language`);
3. the pair's *first answer position* (:func:`first_divergence`): the two clean
   continuations ``c_b`` (base) and ``c_d`` (donor run) share a longest common
   prefix ``a`` (``prefix_len = len(a)``, often a format token); the first
   answer tokens are ``c_b[len(a)]`` and ``c_d[len(a)]``, the first tokens
   where the two runs diverge;
4. one teacher-forced pass (:func:`zhunt.models.generation.score`) over every clean and
   patched row, with ``a`` forced after the prompt (unedited, as the patched
   generation leaves its generated tokens), gives at the position after ``a``
   the log-probabilities of the base's and the donor run's first answer
   tokens, the argmax (the patched first answer token), the probability mass
   of target-script and other-script tokens, and the teacher-forced log p of
   the base's and the donor run's whole continuations. Pairs whose clean runs
   never diverge (identical runs) have no first answer position: their
   tokens are ``-1`` and their LD, NPE and language effect are NaN.

The records carry the cell's key columns (``site, hidden_index, layer, k,
alignment, direction, source``) and the per-row quantities of
:mod:`zhunt.experiments.patching_metrics`.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zhunt.errors import ZhuntError
from zhunt.io import write_table
from zhunt.experiments.patching_design import Cell, donor_pairs, heldout_split, interchange_source, pair_bases, pair_edits

__all__ = ["script_groups", "answer_of", "first_divergence", "cell_context", "cell_pairs", "run_cell"]

log = logging.getLogger("zhunt.experiments.patching")


def script_groups(tokenizer, langs: Sequence[str]) -> np.ndarray:
    """``(G, V)`` vocabulary masks: tokens whose text holds the script of each language.

    ``zh``: a CJK ideograph; any other language: a Latin letter
    (:func:`zhunt.data.language_id.classify_language` of the decoded token is ``zh`` /
    ``en``, or ``mixed``).
    """
    from zhunt.data.language_id import classify_language

    V = len(tokenizer)
    tags = [classify_language(t) for t in tokenizer.batch_decode([[i] for i in range(V)])]
    out = np.zeros((len(langs), V), dtype=bool)
    for g, lg in enumerate(langs):
        want = "zh" if lg == "zh" else "en"
        out[g] = [t in (want, "mixed") for t in tags]
    return out


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


def run_cell(model_dir, store_path, mask_path, prompts_path, languages: Sequence[str], templates_path,
             family: str, cell: Cell, *, kind: str = "multihead", n_donors: int = 1, seed: int = 0,
             max_new_tokens: int = 16, batch_size: int = 16, das_path=None, out_records,
             threads: int | None = None) -> pd.DataFrame:
    """Run one cell and write its records (TSV).

    Parameters
    ----------
    model_dir, store_path : path
        Prepared model folder and its activation store of the same prompt set.
    mask_path : path
        Z-mask file of ``cell.layer`` (:func:`zhunt.weights.masks.read_mask`, ``kind``, ``cell.k``).
    prompts_path, templates_path, languages, family
        Prompt table, templates, loaded languages, template family.
    cell : Cell
    n_donors : int
        Donors per base problem.
    seed : int
        Seed of the donor permutation, of the random bases and of the DAS split.
    max_new_tokens, batch_size : int
        Greedy generation budget and prompts per batch.
    das_path : path, optional
        HDF5 with a learned basis ``basis`` (k, d) for this (site, layer, k);
        its rows are scored on the ``heldout`` pairs only.
    out_records : path

    Returns
    -------
    pandas.DataFrame
        The records written.
    """
    from zhunt.models.generation import generate, score
    from zhunt.weights.masks import read_mask

    t0 = time.perf_counter()
    ctx = cell_context(model_dir, store_path, prompts_path, languages, templates_path, family, threads=threads)
    model, tok, ad = ctx["model"], ctx["tokenizer"], ctx["adapter"]
    tgt, src = cell.languages
    prompt_of, key_answer, problems = ctx["prompt_of"], ctx["key_answer"], ctx["problems"]
    V_Z = read_mask(mask_path, kind, cell.k)
    if V_Z.shape != (cell.k, ad.hidden_size):
        raise ZhuntError(str(mask_path), f"mask {kind}/k{cell.k} has shape {V_Z.shape}, expected "
                         f"{(cell.k, ad.hidden_size)}")
    V_das = None
    if das_path is not None:
        import h5py

        with h5py.File(das_path, "r") as f:
            V_das = np.asarray(f["basis"], dtype=np.float64)
            das_overlap = float(f.attrs["overlap_z"])
        if V_das.shape[0] == 0:  # not fitted (no diverging train pair, fit_cell_das): no das rows
            log.warning("cell %s: the DAS basis %s was not fitted; no das rows", cell.name, das_path)
            V_das = None
    split = heldout_split(problems, seed=seed)
    pairs, unmatched, states = cell_pairs(ctx, cell, n_donors=n_donors, seed=seed)
    rows, edits = [], []
    for pi, ((b, d), (H, S)) in enumerate(zip(pairs, states)):
        V_R = pair_bases(cell.k, ad.hidden_size, pi, seed)
        ed = pair_edits(S, H, V_Z, V_R, V_das if split[b] == "heldout" else None)
        rows.append({"pair": pi, "problem": b, "donor": d, "split": split[b], "subspace": "none", "dh_norm": 0.0})
        edits.append(None)
        for name, (e, norm) in ed.items():
            rows.append({"pair": pi, "problem": b, "donor": d, "split": split[b], "subspace": name,
                         "dh_norm": norm})
            edits.append(e)
    add_special = ctx["add_special"]

    t_setup = time.perf_counter() - t0
    gen_kw = dict(max_new_tokens=int(max_new_tokens), batch_size=int(batch_size), add_special_tokens=add_special)
    clean_ids = sorted({p for pr in pairs for p in pr}, key=problems.index)
    g = generate(model, tok, [prompt_of[(p, tgt)] for p in clean_ids], **gen_kw)
    clean = {p: x for p, x in zip(clean_ids, g)}
    patched = [i for i, e in enumerate(edits) if e is not None]
    g = generate(model, tok, [prompt_of[(rows[i]["problem"], tgt)] for i in patched],
                 layer_module=ad.layers[cell.layer], edits=[edits[i] for i in patched], site=cell.site, **gen_kw)
    text = {i: x["text"] for i, x in zip(patched, g)}
    t_gen = time.perf_counter() - t0 - t_setup

    # one teacher-forced pass: per pair the clean base, the donor run, then every patched row
    other = _other_language(tgt, languages)
    groups = script_groups(tok, [tgt, other])
    s_rows = [("base", pi) for pi in range(len(pairs))] + [("donor", pi) for pi in range(len(pairs))] \
        + [("patched", i) for i in patched]

    def prob_of(kind_, x):
        return pairs[x][0] if kind_ == "base" else pairs[x][1] if kind_ == "donor" else rows[x]["problem"]

    def pair_of(kind_, x):
        return x if kind_ != "patched" else rows[x]["pair"]

    # per pair: the first answer position, after the two clean runs' common prefix
    div = [first_divergence(clean[b]["token_ids"], clean[d]["token_ids"]) for b, d in pairs]
    differs = [bt >= 0 and dt >= 0 for _, bt, dt in div]
    cands, conts, prefs = [], [], []
    for kind_, x in s_rows:
        pi = pair_of(kind_, x)
        b, d = pairs[pi]
        L = div[pi][0] if differs[pi] else 0  # identical runs: no answer position, nothing to score there
        cands.append(list(div[pi][1:]) if differs[pi] else [])
        prefs.append(clean[b]["token_ids"][:L])
        conts.append([clean[b]["token_ids"][L:], clean[d]["token_ids"][L:]])  # LD of the whole runs: a cancels
    sc = score(model, tok, [prompt_of[(prob_of(k_, x), tgt)] for k_, x in s_rows], candidates=cands,
               continuations=conts, prefixes=prefs, token_groups=groups, layer_module=ad.layers[cell.layer],
               site=cell.site, edits=[None] * (2 * len(pairs)) + [edits[i] for i in patched],
               batch_size=int(batch_size), add_special_tokens=add_special)
    t_score = time.perf_counter() - t0 - t_setup - t_gen
    lpc = np.full((len(s_rows), 2), np.nan)  # (rows, base / donor token); NaN where the runs never diverge
    lpc[:, :sc["lp_candidates"].shape[1]] = sc["lp_candidates"]
    ld = lpc[:, 1] - lpc[:, 0]
    ld_seq = sc["lp_continuations"][:, 1] - sc["lp_continuations"][:, 0]
    lang = sc["lp_groups"][:, 0] - sc["lp_groups"][:, 1]
    n_p = len(pairs)
    pos = {i: 2 * n_p + q for q, i in enumerate(patched)}

    out = []
    for i, r in enumerate(rows):
        pi, b, d = r["pair"], r["problem"], r["donor"]
        base_ans, base_lang = answer_of(clean[b]["text"], tgt)
        donor_ans, _ = answer_of(clean[d]["text"], tgt)
        q = pos.get(i, pi)  # the none row is the clean base row
        ans, ans_lang = (base_ans, base_lang) if i not in pos else answer_of(text[i], tgt)
        prefix_len, base_tok, donor_tok = div[pi]
        fd = differs[pi]
        first_tok = int(sc["first_argmax"][q]) if fd else -1
        den = ld[n_p + pi] - ld[pi]
        out.append({**cell.key(), "target_lang": tgt, "source_lang": src, **r, "prefix_len": prefix_len,
                    "base_token": base_tok, "donor_token": donor_tok, "first_token": first_tok,
                    "first_differs": fd, "iia_hit": fd and first_tok == donor_tok,
                    "base_answer": base_ans, "donor_answer": donor_ans, "answer": ans,
                    "key_answer": key_answer[d],
                    "value_differs": base_ans is not None and donor_ans is not None and base_ans != donor_ans,
                    "value_hit": ans is not None and ans == donor_ans, "true_hit": ans is not None and
                    ans == key_answer[d], "ld_clean": ld[pi], "ld_donor_run": ld[n_p + pi], "ld": ld[q],
                    "npe": (ld[q] - ld[pi]) / den if fd and den != 0 else np.nan,
                    "ld_seq": ld_seq[q] - ld_seq[pi], "lang_effect": lang[q] - lang[pi] if fd else np.nan,
                    "answer_lang": ans_lang, "base_answer_lang": base_lang,
                    "text": clean[b]["text"] if i not in pos else text[i]})
    rec = pd.DataFrame(out)
    if V_das is not None:  # the learned subspace's overlap with Z (Grassmann similarity), on its rows
        rec["overlap_z"] = np.where(rec["subspace"] == "das", das_overlap, np.nan)
    for c in ("base_answer", "donor_answer", "answer"):
        rec[c] = rec[c].astype("Int64")
    write_table(rec, out_records)
    log.info("cell %s: %d pairs (%d bases without a donor), %d rows in %.1fs (setup %.1fs, generation %.1fs, "
             "scoring %.1fs)", cell.name, n_p, len(unmatched), len(rec), time.perf_counter() - t0, t_setup, t_gen,
             t_score)
    return rec


def fit_cell_das(model_dir, store_path, mask_path, prompts_path, languages: Sequence[str], templates_path,
                 family: str, *, site: str, layer: int, k: int, target_lang: str, kind: str = "multihead",
                 n_donors: int = 1, seed: int = 0, steps: int = 200, lr: float = 1e-2, batch_size: int = 16,
                 max_new_tokens: int = 16, out_h5, threads: int | None = None) -> dict:
    """Fit the DAS subspace of one (site, layer, k) on the train split and save it.

    Training data: the template-aligned same-language pairs of ``target_lang``
    (:func:`cell_pairs` of the ``aligned`` cell) whose base *and* donor are in
    the ``train`` split (:func:`zhunt.experiments.patching_design.heldout_split`) and whose
    clean greedy runs (``max_new_tokens``) diverge; target = the donor run's
    first answer token after the pair's common prefix, which is teacher-forced
    and not patched (:func:`first_divergence`, as :func:`run_cell` scores it).
    :func:`zhunt.experiments.das.fit_das` learns the basis; every cell then scores it on
    its ``heldout`` pairs like any other subspace.

    Writes ``out_h5`` with dataset ``basis`` (k, d) and attributes ``site``,
    ``layer``, ``k``, ``hidden_index``, ``n_train``, ``steps``, ``lr``,
    ``seconds``, ``final_loss``, ``overlap_z`` (Grassmann similarity with V_Z)
    and ``cos_angles_z`` (cosines of the principal angles). Without a
    diverging train pair nothing is fitted: ``basis`` is ``(0, d)``,
    ``n_train = steps = 0`` and ``overlap_z`` NaN, and the cells add no
    ``das`` rows.

    Returns
    -------
    dict
        The attributes written.
    """
    from zhunt.experiments.das import fit_das
    from zhunt.models.generation import generate
    from zhunt.io import atomic_path
    from zhunt.weights.masks import read_mask
    from zhunt.subspace import grassmann_similarity, principal_angles

    import h5py

    ctx = cell_context(model_dir, store_path, prompts_path, languages, templates_path, family, threads=threads)
    cell = Cell(site, int(layer), int(k), "aligned", f"{target_lang}<-{target_lang}")
    pairs, _, states = cell_pairs(ctx, cell, n_donors=n_donors, seed=seed)
    split = heldout_split(ctx["problems"], seed=seed)
    train = [i for i, (b, d) in enumerate(pairs) if split[b] == "train" and split[d] == "train"]
    if not train:
        raise ZhuntError(f"cell {cell.name}", "no template-aligned pair in the DAS train split")
    prompt = lambda p: ctx["prompt_of"][(p, target_lang)]  # noqa: E731
    ids = sorted({p for i in train for p in pairs[i]}, key=ctx["problems"].index)
    runs = generate(ctx["model"], ctx["tokenizer"], [prompt(p) for p in ids], max_new_tokens=int(max_new_tokens),
                    batch_size=int(batch_size), add_special_tokens=ctx["add_special"])
    clean = {p: r["token_ids"] for p, r in zip(ids, runs)}
    div = {i: first_divergence(clean[pairs[i][0]], clean[pairs[i][1]]) for i in train}
    train = [i for i in train if div[i][1] >= 0 and div[i][2] >= 0]
    V_Z = read_mask(mask_path, kind, int(k))
    if not train:  # nothing to learn from: an empty basis, and no das rows in the cells
        log.warning("DAS %s L%d k=%d: no pair of the train split whose clean runs diverge; not fitted", site,
                    layer, k)
        attrs = {"site": site, "layer": int(layer), "k": int(k), "hidden_index": cell.hidden_index, "n_train": 0,
                 "steps": 0, "lr": float(lr), "seconds": 0.0, "final_loss": float("nan"),
                 "overlap_z": float("nan")}
        with atomic_path(out_h5, suffix=".h5") as tmp:
            with h5py.File(tmp, "w") as f:
                f["basis"] = np.zeros((0, V_Z.shape[1]), dtype=np.float32)
                f["losses"] = np.zeros(0)
                f["cos_angles_z"] = np.zeros(0)
                for key, v in attrs.items():
                    f.attrs[key] = v
        return attrs
    fit = fit_das(ctx["model"], ctx["tokenizer"], [prompt(pairs[i][0]) for i in train],
                  [states[i][1].astype(np.float32) for i in train], [div[i][2] for i in train],
                  layer=int(layer), site=site, k=int(k), steps=int(steps), lr=float(lr), batch_size=int(batch_size),
                  random_state=int(seed), add_special_tokens=ctx["add_special"],
                  prefixes=[clean[pairs[i][0]][:div[i][0]] for i in train])
    attrs = {"site": site, "layer": int(layer), "k": int(k), "hidden_index": cell.hidden_index,
             "n_train": len(train), "steps": int(steps), "lr": float(lr), "seconds": float(fit.seconds),
             "final_loss": float(np.mean(fit.losses[-10:])), "overlap_z": float(grassmann_similarity(fit.basis, V_Z))}
    with atomic_path(out_h5, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f["basis"] = np.asarray(fit.basis, dtype=np.float32)
            f["losses"] = np.asarray(fit.losses, dtype=np.float64)
            f["cos_angles_z"] = np.cos(principal_angles(fit.basis, V_Z))
            for key, v in attrs.items():
                f.attrs[key] = v
    log.info("DAS %s L%d k=%d: %d train pairs, loss %.3f -> %.3f, overlap with Z %.3f, %.1fs", site, layer, k,
             len(train), fit.losses[0], attrs["final_loss"], attrs["overlap_z"], fit.seconds)
    return attrs
