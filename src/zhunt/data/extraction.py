"""Batched extraction of every hidden state into the activation store.

:func:`extract_to_store` runs the model once over every prompt (no
generation) and streams all ``L + 1`` hidden states of every non-pad token
into an HDF5 store (layout in :mod:`zhunt.data.store`).

Why hooks and not ``output_hidden_states``: in transformers 5.x the last entry
of ``hidden_states`` is taken *after* the final norm, while entries ``0..L-1``
are raw residual-stream states. The store holds the raw residual stream at
every index, so it captures ``j = 0`` with a forward pre-hook on ``layers[0]``
(exactly what the first decoder layer receives — Gemma's ``sqrt(d)``
embedding scaling included) and ``j = l + 1`` with a forward hook on
``layers[l]``.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from zhunt.errors import ZhuntError
from zhunt.models.batching import halve_on_oom, left_pad, pad_id, tokenize_prompts
from zhunt.models.hooks import capture_hidden_states
from zhunt.progress import Progress
from zhunt.data.numerals import numeral_token_ids
from zhunt.data.store import StoreWriter

__all__ = ["extract_to_store", "prompt_table_sha256",
           "batch_plan", "shard_batches", "ExtractionPlan", "plan_extraction", "batch_rows"]

log = logging.getLogger("zhunt.data.extraction")




def batch_plan(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Length-sorted batches: prompt indices, longest first (ties in prompt order), ``batch_size`` each.

    Parameters
    ----------
    lengths : np.ndarray
        ``(N,)`` token counts.
    batch_size : int

    Returns
    -------
    list of np.ndarray
        ``ceil(N / batch_size)`` int64 index arrays.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def shard_batches(n_batches: int, shard: int, n_shards: int) -> list[int]:
    """Batches of shard ``shard`` of ``n_shards``: every ``n_shards``-th batch of the global plan.

    Round robin over the length-sorted plan gives every shard a similar share
    of long and short prompts; because a shard runs exactly the batches the
    unsharded run would (same prompts, same padding), its rows are bit for bit
    those of the unsharded run (a batch split by an out-of-memory retry is the
    exception: its halves are padded differently, so its rows agree to float
    tolerance only).
    """
    if not 0 <= shard < n_shards:
        raise ZhuntError("extraction.shards", f"shard {shard} outside 0..{n_shards - 1}")
    return list(range(shard, n_batches, n_shards))


def prompt_table_sha256(prompts: pd.DataFrame) -> str:
    """SHA256 of the (id, lang, text) triples, in order (identifies the prompt content)."""
    h = hashlib.sha256()
    idcol = "id" if "id" in prompts.columns else "prompt_id"
    for pid, lang, text in zip(prompts[idcol], prompts["lang"], prompts["text"]):
        h.update(f"{pid}\t{lang}\t{text}\n".encode("utf-8"))
    return h.hexdigest()




def _forward_kwargs(model: nn.Module) -> dict:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    # only the last position's logits: avoids a (B, T, vocab) tensor we never use
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


@dataclass
class ExtractionPlan:
    """What one extraction (or one shard of it) runs: the prompts in store order and their batches.

    Attributes
    ----------
    prompts : pandas.DataFrame
        The prompts this run stores, in prompt (= file) order.
    keys : list of (str, str)
        ``(id, lang)`` of each prompt.
    ids : list of list of int
        Token ids of each prompt.
    lengths, offsets : np.ndarray
        ``(N,)`` token counts and first-row offsets in the store.
    batches : list of np.ndarray
        Indices into ``prompts`` of each forward pass, in run order (:func:`batch_plan`).
    positions : np.ndarray
        ``(N,)`` position of each prompt in the full table (``arange`` unless sharded).
    n_total : int
        Prompts of the full table.
    """

    prompts: pd.DataFrame
    keys: list
    ids: list
    lengths: np.ndarray
    offsets: np.ndarray
    batches: list
    positions: np.ndarray
    n_total: int

    @property
    def n_rows(self) -> int:
        """Token rows this run stores."""
        return int(self.lengths.sum())


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def _checked_prompts(prompts: pd.DataFrame, dtype: str, batch_size: int) -> tuple[pd.DataFrame, list]:
    """The prompt frame (index reset) and its ``(id, lang)`` keys; raises on a bad table or setting."""
    idcol = "id" if "id" in prompts.columns else "prompt_id"
    for col in (idcol, "lang", "text"):
        if col not in prompts.columns:
            raise ZhuntError("prompts", f"prompt table lacks column {col!r} (have {list(prompts.columns)})")
    if len(prompts) == 0:
        raise ZhuntError("prompts", "prompt table is empty")
    if dtype not in ("float32", "float16"):
        raise ZhuntError("dtype", f"activation dtype must be 'float32' or 'float16', not {dtype!r}")
    if batch_size < 1:
        raise ZhuntError("batch_size", f"must be >= 1, got {batch_size}")
    prompts = prompts.reset_index(drop=True)
    keys = list(zip(prompts[idcol].astype(str), prompts["lang"].astype(str)))
    if len(set(keys)) != len(keys):
        dup = pd.Series(keys)[pd.Series(keys).duplicated()].iloc[0]
        raise ZhuntError("prompts", f"duplicate (id, lang) pair {dup}")
    return prompts, keys


def plan_extraction(prompts: pd.DataFrame, keys: list, ids: list, batch_size: int,
                    shard: tuple[int, int] | None = None) -> ExtractionPlan:
    """The batch plan of a tokenized prompt table, restricted to shard ``(i, N)`` when given.

    A shard keeps the batches :func:`shard_batches` gives it, its prompts in prompt order and
    each batch re-indexed into them, so its rows are those of the unsharded run.
    """
    lengths = np.array([len(s) for s in ids], dtype=np.int64)
    if (lengths == 0).any():
        i = int(np.flatnonzero(lengths == 0)[0])
        raise ZhuntError("prompts", f"prompt {keys[i][0]!r} ({keys[i][1]}) tokenizes to no tokens")
    batches = batch_plan(lengths, batch_size)
    n_total = len(prompts)
    if shard is None:
        return ExtractionPlan(prompts, keys, ids, lengths, _offsets(lengths), batches, np.arange(n_total), n_total)
    i_shard, n_shards = int(shard[0]), int(shard[1])
    batches = [batches[b] for b in shard_batches(len(batches), i_shard, n_shards)]
    if not batches:
        raise ZhuntError("extraction.shards", f"{n_shards} shards for {len(lengths)} prompts in batches of "
                         f"{batch_size}: shard {i_shard} has no batch (use at most "
                         f"{-(-len(lengths) // batch_size)} shards)")
    positions = np.sort(np.concatenate(batches))  # this shard's prompts, in prompt order
    local = np.full(n_total, -1, dtype=np.int64)
    local[positions] = np.arange(len(positions))
    lengths = lengths[positions]
    return ExtractionPlan(prompts.iloc[positions].reset_index(drop=True), [keys[p] for p in positions],
                          [ids[p] for p in positions], lengths, _offsets(lengths), [local[b] for b in batches],
                          positions, n_total)


def _prompt_records(plan: ExtractionPlan) -> list[dict]:
    """One index record per prompt: ``prompt_id``, ``lang``, ``length`` (+ ``answer``, ``category``)."""
    meta = pd.DataFrame({"prompt_id": [k[0] for k in plan.keys], "lang": [k[1] for k in plan.keys],
                         "length": plan.lengths})
    for col in ("answer", "category"):
        if col in plan.prompts.columns:
            meta[col] = plan.prompts[col].tolist()
    return meta.to_dict("records")  # once, not a DataFrame slice + to_dict per batch


def _store_attrs(model, table_sha: str, special_ids, add_special_tokens: bool, batch_size: int,
                 attrs: Mapping | None, plan: ExtractionPlan, shard) -> dict:
    """Root attributes of the store: how it was extracted, the caller's ``attrs``, the shard's place."""
    out = {
        "prompt_table_sha256": table_sha,
        "add_special_tokens": bool(add_special_tokens),
        "batch_size": int(batch_size),
        "padding": "left, position_ids = cumsum(attention_mask) - 1",
        "special_token_ids": np.array(sorted(special_ids), dtype=np.int64),
        "model_class": type(model).__name__,
    }
    out.update(dict(attrs or {}))
    if shard is not None:
        out.update(shard=int(shard[0]), n_shards=int(shard[1]), n_prompts_total=plan.n_total,
                   prompt_positions=plan.positions.astype(np.int64))
    return out


def batch_rows(batch: np.ndarray, lengths: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat ``(b * T + t)`` indices of a left-padded batch's real tokens, its prompts in prompt order.

    Parameters
    ----------
    batch : np.ndarray
        ``(B,)`` prompt indices, in batch-row order.
    lengths : np.ndarray
        Token count of every prompt.
    T : int
        Padded length of the batch.

    Returns
    -------
    rows : np.ndarray
        ``(sum n_b,)`` indices into the ``(B * T)`` flattened batch: with left padding the prompt
        in batch row ``b`` holds the last ``n_b`` columns.
    in_order : np.ndarray
        ``(B,)`` the batch's prompt indices sorted (the order of ``rows``).
    """
    rank = np.argsort(batch, kind="stable")  # batch rows in prompt order
    in_order = batch[rank]
    n_b = lengths[in_order]
    first = rank * T + T - n_b  # flat index of each prompt's first token
    rows = np.arange(int(n_b.sum())) + np.repeat(first - (np.cumsum(n_b) - n_b), n_b)
    return rows, in_order


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def extract_to_store(model: nn.Module, tokenizer, layers: Sequence[nn.Module], prompts: pd.DataFrame,
                     out_path: str | os.PathLike, *, batch_size: int = 16, dtype: str = "float32",
                     attrs: Mapping | None = None, add_special_tokens: bool = True,
                     hidden_indices: Sequence[int] | None = None, shard: tuple[int, int] | None = None) -> dict:
    """Run every prompt through the model and store all hidden states of all tokens.

    Prompts are tokenized up front (the store is pre-sized) and run in length-sorted, left-padded
    batches (:func:`plan_extraction`, :func:`_run_batches`); the file appears only when complete.

    Parameters
    ----------
    model : nn.Module
        A causal LM (or base model) whose forward accepts ``input_ids``, ``attention_mask``,
        ``position_ids``; in eval mode for the run (its training flag is restored afterwards).
    tokenizer : transformers tokenizer
        Token ids and ``all_special_ids``; its padding side does not matter (padding is done here).
    layers : sequence of nn.Module
        The ``L`` decoder layers (``get_adapter(model).layers``).
    prompts : pandas.DataFrame
        Columns ``id`` (or ``prompt_id``), ``lang``, ``text``; optional ``answer``, ``category``
        are copied to the index. ``(id, lang)`` must be unique. Stored at ``out_path`` (``.h5``).
    batch_size, dtype : int, str
        Prompts per forward pass; storage dtype (``float32`` or ``float16``).
    attrs : mapping, optional
        Extra root attributes (model name, source, revision, prompt-file SHA256, ...).
    add_special_tokens : bool
        Passed to the tokenizer (BOS for Gemma/Llama; Qwen adds none).
    hidden_indices : sequence of int, optional
        Hidden indices whose token rows are stored (default all ``0..L``); the others keep only
        pooled vectors (see :class:`zhunt.data.store.StoreWriter`).
    shard : (int, int), optional
        ``(i, N)``: run only shard ``i`` of ``N`` (:func:`shard_batches` of the global plan) and
        write a complete store of those prompts, in prompt order, whose attributes ``shard``,
        ``n_shards``, ``prompt_positions``, ``n_prompts_total`` let
        :func:`zhunt.data.store.gather_shards` join the shards into one store.

    Returns
    -------
    dict
        ``n_prompts``, ``hidden_indices``, ``n_rows``, ``num_layers``, ``hidden_size``, ``n_batches``,
        ``padding_fraction``.

    Raises
    ------
    ZhuntError
        Missing columns, duplicate ``(id, lang)`` pairs, a prompt that tokenizes to no tokens, or
        a bad ``dtype`` or ``batch_size``.
    """
    prompts, keys = _checked_prompts(prompts, dtype, batch_size)
    ids = tokenize_prompts(tokenizer, prompts["text"].astype(str).tolist(), add_special_tokens=add_special_tokens)
    table_sha = prompt_table_sha256(prompts)
    plan = plan_extraction(prompts, keys, ids, batch_size, shard)
    special_ids = set(int(t) for t in (getattr(tokenizer, "all_special_ids", None) or []))
    pad = pad_id(tokenizer)
    all_attrs = _store_attrs(model, table_sha, special_ids, add_special_tokens, batch_size, attrs, plan, shard)

    # the digit-confound control's numeral-free mean is kept for the indices stored without token rows
    numeral_ids = numeral_token_ids(tokenizer, {t for s in ids for t in s}) if hidden_indices is not None else None

    def open_store(d: int) -> StoreWriter:
        return StoreWriter(out_path, num_layers=len(layers), hidden_size=d, n_rows_total=plan.n_rows,
                           dtype=dtype, attrs=all_attrs, hidden_indices=hidden_indices, numeral_ids=numeral_ids)

    was_training = model.training
    model.eval()
    try:
        writer, padded = _run_batches(model, layers, plan, pad, np.array(sorted(special_ids), dtype=np.int64),
                                      open_store)
    finally:
        model.train(was_training)
    return {
        "n_prompts": int(len(plan.prompts)),
        "hidden_indices": list(writer.hidden_indices),
        "n_rows": plan.n_rows,
        "num_layers": len(layers),
        "hidden_size": int(writer.hidden_size),
        "n_batches": len(plan.batches),
        "padding_fraction": padded / max(1, padded + plan.n_rows),
    }


def _run_batches(model: nn.Module, layers: Sequence[nn.Module], plan: ExtractionPlan, pad_id: int,
                 special_arr: np.ndarray, open_store) -> tuple[StoreWriter, int]:
    """Forward every batch of ``plan`` and hand its non-pad rows to the store ``open_store(d)`` opens
    at the first batch. Returns the closed writer and the number of pad positions run.

    Batches are left-padded with explicit ``position_ids`` and run under
    ``torch.inference_mode()``. Each batch's non-pad rows are gathered in prompt order (one
    ``index_select`` per hidden state, before the copy to the host, :func:`batch_rows`) and handed
    to the writer with their offsets in the original prompt order; the writer buffers at most
    ``max(32 MiB, one batch)`` of rows and writes them in file order. A batch that raises a CUDA
    out-of-memory error is retried as two halves (logged), down to one prompt
    (:func:`halve_on_oom`); any error leaves no file.
    """
    device, fkw = _device(model), _forward_kwargs(model)
    records = _prompt_records(plan)
    writer: StoreWriter | None = None
    padded = 0
    try:
        progress = Progress(len(plan.batches), "extraction batch")
        with torch.inference_mode(), capture_hidden_states(layers) as cap:
            queue = list(plan.batches)
            while queue:
                batch = queue.pop(0)
                input_ids, attn, pos = left_pad([plan.ids[i] for i in batch], pad_id)
                T = input_ids.shape[1]
                cap.clear()
                try:
                    model(input_ids=input_ids.to(device), attention_mask=attn.to(device),
                          position_ids=pos.to(device), use_cache=False, **fkw)
                except Exception as exc:  # CUDA OOM: retry this batch as two halves
                    cap.clear()
                    queue[:0] = halve_on_oom(exc, batch, "extraction")
                    continue
                padded += int(T * len(batch) - attn.sum())
                if any(len(h) != 1 for h in cap.hidden):
                    raise RuntimeError("expected exactly one forward call per decoder layer per batch")
                hs = [h[0] for h in cap.hidden]
                if writer is None:
                    writer = open_store(int(hs[0].shape[-1]))
                rows, in_order = batch_rows(batch, plan.lengths, T)
                rows_t = torch.from_numpy(rows).to(hs[0].device)
                # one gather per hidden state, before the host copy; fresh float32 arrays, so
                # the writer may keep them (copy=False)
                hidden = [h.reshape(-1, h.shape[-1]).index_select(0, rows_t).float().cpu().numpy() for h in hs]
                tok = input_ids.reshape(-1).numpy()[rows]
                cap.clear()
                writer.append([records[i] for i in in_order], hidden, tok, np.isin(tok, special_arr),
                              offsets=plan.offsets[in_order], copy=False)
                del hs, hidden
                progress.update()  # batches done
        assert writer is not None
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return writer, padded
