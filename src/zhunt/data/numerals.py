"""Numeral tokens: the token ids left out by the numeral-free pooling (digit-confound control).

Paired prompts of one problem share their numerals ("23", "14" appear in the en
and in the zh prompt alike), so mean-pooled states of the same problem in two
languages are close even where a model computes nothing language-agnostic: the
shared numeral tokens alone make them close. The control pools without those
tokens (:meth:`zhunt.data.store.ActivationStore.pooled`, ``exclude_ids``).

Definition (fixed here once)
----------------------------
A token is a **numeral token** when its decoded text contains a decimal digit:
a character of Unicode category ``Nd`` (``str.isdecimal``), so ASCII ``0-9``,
full-width ``０-９`` and the other scripts' decimal digits. CJK numeral
*characters* (``一 二 三 … 十 百 千 万``, category ``Lo``) are **not** numeral
tokens: they are never shared with the Latin-script prompts (so they cannot
create the cross-lingual shared-token closeness this control removes), and in
the prompt sets they are mostly parts of ordinary words (``一共`` "altogether",
``第一`` "first"), whose removal would take non-numeric content out as well.
Number words (``twenty-three``) are kept for the same reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import math

import numpy as np

__all__ = ["TOKEN_SETS", "DIGIT_CONFOUND_COLUMNS", "is_numeral_text", "numeral_token_ids",
           "store_numeral_ids", "digit_confound_fractions"]

#: Token sets a pooled analysis can run on: every non-special token, or the numeral-free set.
TOKEN_SETS = ("all", "no_numerals")
#: Value columns of a digit-confound table (Phase 2 and NN retrieval write the same shape).
DIGIT_CONFOUND_COLUMNS = ("value", "value_embedding", "value_no_numerals", "value_embedding_no_numerals",
                          "frac_beyond_embedding", "frac_without_numerals", "frac_both")


def is_numeral_text(text: str) -> bool:
    """Whether ``text`` contains a decimal digit (Unicode ``Nd``; see the module docstring)."""
    return any(ch.isdecimal() for ch in str(text))


def numeral_token_ids(tokenizer, token_ids: Iterable[int]) -> np.ndarray:
    """The numeral tokens among ``token_ids``.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        Decodes one id at a time (``tokenizer.decode([i])``).
    token_ids : iterable of int
        Candidate ids (e.g. the distinct ids of an activation store).

    Returns
    -------
    ndarray of shape (n,), int64
        Sorted distinct ids whose decoded text contains a decimal digit.
    """
    ids = np.unique(np.asarray(list(token_ids), dtype=np.int64))
    keep = [int(i) for i in ids if is_numeral_text(tokenizer.decode([int(i)]))]
    return np.asarray(keep, dtype=np.int64)


def store_numeral_ids(model_dir, store_path) -> np.ndarray:
    """Numeral token ids of an activation store, decoded with the model folder's tokenizer.

    Parameters
    ----------
    model_dir : path
        Prepared model folder (its tokenizer is loaded offline).
    store_path : path
        Activation store; only its distinct token ids are decoded.

    Returns
    -------
    ndarray of shape (n,), int64
    """
    from transformers import AutoTokenizer

    from zhunt.errors import ZhuntError
    from zhunt.data.store import ActivationStore

    folder = Path(model_dir)
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ZhuntError(str(folder), f"cannot load the tokenizer ({' '.join(str(exc).split())[:200]})") from None
    with ActivationStore(store_path) as store:
        return numeral_token_ids(tok, store.token_ids)


def digit_confound_fractions(v: float, v_emb: float, v_nonum: float, v_emb_nonum: float) -> dict:
    """How much of a signal survives the two digit-confound controls.

    Parameters
    ----------
    v : float
        The signal at the analysed site (every non-special token pooled), above its chance level.
    v_emb : float
        The same at hidden index 0 (embedding output: shared numerals, no computation).
    v_nonum, v_emb_nonum : float
        The same two with numeral tokens left out of the pooling.

    Returns
    -------
    dict
        ``frac_beyond_embedding = (v - v_emb) / v``, ``frac_without_numerals =
        v_nonum / v`` and ``frac_both = (v_nonum - v_emb_nonum) / v`` (what is
        left after both controls, as a fraction of the signal); NaN when ``v <= 0``
        (no signal to explain). Values above 1 or below 0 are kept (a control can
        raise the signal or reverse it).
    """
    if not np.isfinite(v) or v <= 0:
        return {"frac_beyond_embedding": math.nan, "frac_without_numerals": math.nan, "frac_both": math.nan}
    return {"frac_beyond_embedding": (v - v_emb) / v, "frac_without_numerals": v_nonum / v,
            "frac_both": (v_nonum - v_emb_nonum) / v}
