"""Paired prompt states: every problem's pooled hidden states in every language, at every depth.

The seed-003 analyses (:mod:`zhunt.activations.theory`) read an activation store once into a
:class:`PairedStates` (problems paired by :func:`zhunt.data.pairing.pair_by_problem`).

Notation and definitions: :mod:`zhunt.activations.theory` (one list for every seed-003 quantity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zhunt.data.pairing import pair_by_problem
from zhunt.errors import ZhuntError

__all__ = ["PairedStates", "load_paired", "default_pair", "reference_language"]


@dataclass
class PairedStates:
    """Pooled states of every problem in every language, aligned by problem.

    Attributes
    ----------
    H : ndarray of shape (K, L + 1, N, d), float64
        ``H[k, j, i]`` = pooled state of problem ``i`` in language ``langs[k]`` at hidden index ``j``.
    langs : list of str
        ``K`` languages in store order.
    problems : list of str
        ``N`` problem ids in store order.
    category : ndarray of shape (N,), str
        Category of each problem ("" if the store has none).
    prompt_length : ndarray of shape (K, N), int
        Prompt token counts.
    source : str
        Where the states came from (store path).
    """

    H: np.ndarray
    langs: list
    problems: list
    category: np.ndarray
    prompt_length: np.ndarray
    source: str = ""

    @property
    def num_layers(self) -> int:
        """``L``: hidden indices run over ``0..L``."""
        return self.H.shape[1] - 1

    def states(self, lang: str) -> np.ndarray:
        """``(L + 1, N, d)`` pooled states of one language."""
        return self.H[self.langs.index(lang)]

    def updates(self, lang: str) -> np.ndarray:
        """``(L, N, d)`` contributions ``f_j = h(j + 1) - h(j)`` of one language."""
        S = self.states(lang)
        return S[1:] - S[:-1]


def load_paired(store, pooling: str = "mean", exclude_special: bool = True, exclude_ids=None) -> PairedStates:
    """Read pooled states of every prompt at every depth and align them by problem.

    Parameters
    ----------
    store : ActivationStore
        The open activation store.
    pooling : {"mean", "last"}
    exclude_special, exclude_ids
        Passed to :meth:`zhunt.data.store.ActivationStore.pooled` (``exclude_ids``:
        the numeral-free pooling's token ids, :mod:`zhunt.data.numerals`).

    Returns
    -------
    PairedStates

    Raises
    ------
    ZhuntError
        Empty store, fewer than two languages or three problems, or a problem
        that lacks a prompt in some language (:func:`zhunt.data.pairing.pair_by_problem`;
        problems in the store's order of its first language).
    """
    where = str(store.path)
    pr = store.prompts
    if pr.empty:
        raise ZhuntError(where, "activation store holds no prompts")
    langs = store.languages
    if len(langs) < 2:
        raise ZhuntError(where, f"cross-lingual analysis needs at least 2 languages, store has {langs}")
    problems, rows = pair_by_problem({l: store.prompt_ids(l) for l in langs}, where=where, min_problems=3)
    lang_col = pr["lang"].to_numpy()
    idx = np.array([np.flatnonzero(lang_col == l)[rows[l]] for l in langs])  # (K, N) prompt-table rows
    cat = (pr["category"].to_numpy() if "category" in pr else np.full(len(pr), ""))
    category = np.array([str(cat[r]) for r in idx[0]], dtype=object)
    plen = pr["length"].to_numpy()[idx]
    L, d = store.num_layers, store.hidden_size
    H = np.empty((len(langs), L + 1, len(problems), d))
    for j in range(L + 1):
        P = store.pooled(j, pooling=pooling, exclude_special=exclude_special, exclude_ids=exclude_ids)
        H[:, j] = P[idx]
    return PairedStates(H=H, langs=langs, problems=problems, category=category, prompt_length=plen, source=where)


def default_pair(langs) -> tuple[str, str]:
    """The pair the seed studies, ``("zh", "en")``, when present; else the first two languages."""
    langs = list(langs)
    if "zh" in langs and "en" in langs:
        return "zh", "en"
    return langs[0], langs[1]


def reference_language(lang: str, langs) -> str:
    """Retrieval target used for ``L*(lang)``: ``en``; for ``en`` itself ``zh``; else the first other language."""
    langs = list(langs)
    if lang != "en" and "en" in langs:
        return "en"
    if lang != "zh" and "zh" in langs:
        return "zh"
    return next(l for l in langs if l != lang)
