"""Batching of model work: tokenising prompts, left padding, and halving a batch on out-of-memory.

Shared by the store's extraction (:mod:`zhunt.data.extraction`), the generator and scorer
(:mod:`zhunt.models.generation`) and DAS (:mod:`zhunt.experiments.das`), so every caller pads a
prompt the same way.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

__all__ = ["is_oom", "halve_on_oom", "tokenize_prompts", "left_pad", "pad_id"]

log = logging.getLogger("zhunt.models.batching")


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error (``torch.cuda.OutOfMemoryError`` or its RuntimeError text)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def halve_on_oom(exc: BaseException, batch, what: str) -> list:
    """The two halves of ``batch`` to retry after an out-of-memory error, or re-raise.

    Parameters
    ----------
    exc : BaseException
        The error a batch's forward pass raised.
    batch : sequence
        The batch's prompt indices (``B`` of them).
    what : str
        Name of the stage, for the log line.

    Returns
    -------
    list
        ``[batch[:ceil(B/2)], batch[ceil(B/2):]]``, in order; the caller runs
        them before any later batch (so a half that still does not fit is
        halved again, down to one prompt).

    Raises
    ------
    BaseException
        ``exc`` itself when it is not an out-of-memory error or the batch is
        a single prompt.
    """
    if not is_oom(exc) or len(batch) <= 1:
        raise exc
    half = (len(batch) + 1) // 2
    log.warning("%s: out of memory on a batch of %d prompts; retrying it as %d + %d", what, len(batch),
                half, len(batch) - half)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return [batch[:half], batch[half:]]


def tokenize_prompts(tokenizer, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each text, unpadded, untruncated.

    Returns
    -------
    list of list of int
        One id list per text.
    """
    enc = tokenizer(list(texts), add_special_tokens=add_special_tokens, padding=False, truncation=False)
    return [list(map(int, ids)) for ids in enc["input_ids"]]


def pad_id(tokenizer) -> int:
    """The id that left padding writes: the pad token, else EOS, else 0 (pads are always
    masked out, so any valid id will do)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into a batch.

    Parameters
    ----------
    seqs : sequence of sequence of int
        ``B`` token id lists.
    pad_id : int
        Id written at pad positions (never attended to).

    Returns
    -------
    input_ids : torch.Tensor
        ``(B, T)`` int64, ``T`` = longest sequence.
    attention_mask : torch.Tensor
        ``(B, T)`` int64, 0 at pads.
    position_ids : torch.Tensor
        ``(B, T)`` int64, ``cumsum(mask) - 1`` (0 at pads) — what ``generate``
        uses, so each prompt's real tokens get positions ``0..n-1`` whatever
        its padding (a plain ``arange`` would shift left-padded prompts).
    """
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, s in enumerate(seqs):
        if len(s):
            ids[b, T - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[b, T - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    return ids, mask, pos
