"""Pairing prompts of several languages by problem id — the one place it is done.

Every cross-lingual analysis compares the *same problem* in two (or more)
languages: pooled vectors (Phase 2, the seed-003 tests, Exp. B, the bridge) or
token clouds (ARD-MMD). :func:`pair_by_problem` turns each language's prompt
ids (in that language's row order, e.g. ``ActivationStore.prompt_ids(lang)``)
into one problem list and, per language, the row of each problem.

Policy for a problem missing in one language: **it is an error**
(:class:`zhunt.errors.ZhuntError` naming the problem and the language). The
prompt sets are built with every problem in every language, so a gap means a
broken or mixed-up input; silently dropping it would change ``N`` (and every
p-value) without a word.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from zhunt.errors import ZhuntError

__all__ = ["pair_by_problem"]


def pair_by_problem(ids_by_lang: Mapping[str, Sequence[str]], *, where: str,
                    min_problems: int = 1) -> tuple[list[str], dict[str, np.ndarray]]:
    """Align the prompts of every language by problem id.

    Parameters
    ----------
    ids_by_lang : mapping of str to sequence of str
        ``{lang: problem ids of that language's rows, in row order}``; the
        first language's order is the problem order of the result. Ids are
        compared as strings and must be unique within a language.
    where : str
        Named in errors (the store path, or the config key the ids came from).
    min_problems : int
        Fewer paired problems than this is an error.

    Returns
    -------
    problems : list of str
        The ``N`` problem ids, in the first language's row order.
    rows : dict of str to ndarray of shape (N,), int
        ``rows[lang][i]`` is the row (position in ``ids_by_lang[lang]``) of
        ``problems[i]``, so ``X_lang[rows[lang]]`` puts every language's rows in
        problem order.

    Raises
    ------
    ZhuntError
        Fewer than two languages, a language with no prompts, a repeated id
        within a language, a problem present in some language but missing in
        another (the policy above), or fewer than ``min_problems`` problems.
    """
    langs = list(ids_by_lang)
    if len(langs) < 2:
        raise ZhuntError(where, f"pairing by problem needs at least 2 languages, got {langs}")
    pos = {}
    for lang in langs:
        ids = [str(p) for p in ids_by_lang[lang]]
        if not ids:
            raise ZhuntError(where, f"language {lang!r} has no prompts")
        pos[lang] = {p: i for i, p in enumerate(ids)}
        if len(pos[lang]) != len(ids):
            dup = next(p for p in ids if ids.count(p) > 1)
            raise ZhuntError(where, f"problem {dup!r} has more than one {lang!r} prompt")
    every = set().union(*(set(p) for p in pos.values()))
    for lang in langs:
        miss = sorted(every - set(pos[lang]))
        if miss:
            have = next(other for other in langs if miss[0] in pos[other])
            raise ZhuntError(where, f"problem {miss[0]!r} has a {have!r} prompt but no {lang!r} prompt "
                                    f"({len(miss)} such problem(s)); every problem needs a prompt in each of "
                                    f"{langs}")
    problems = list(pos[langs[0]])
    if len(problems) < int(min_problems):
        raise ZhuntError(where, f"need at least {int(min_problems)} problems in each of {langs}, "
                                f"found {len(problems)}")
    return problems, {lang: np.array([pos[lang][p] for p in problems], dtype=int) for lang in langs}
