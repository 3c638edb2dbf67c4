"""Language identification of generated text: by script, and by stop words among Latin languages.

:func:`cjk_fraction` and :func:`classify_language` tag a text by script (CJK ideographs vs Latin
letters); :func:`guess_latin_language` votes with stop words among the Latin-script languages.
:data:`SUPPORTED_LANGUAGES` are the languages the number and answer readers handle.
"""

from __future__ import annotations

import re
import unicodedata

from zhunt.errors import ZhuntError

#: Languages this module handles (same codes as ``zhunt.data.prompts.KNOWN_LANGUAGES``).
SUPPORTED_LANGUAGES = ("en", "zh", "es", "fr", "de")

#: ``classify_language`` says ``"zh"`` when ``cjk_fraction(text) >= ZH_MIN_CJK_FRACTION``.
ZH_MIN_CJK_FRACTION = 0.8

#: ``classify_language`` says ``"en"`` (Latin script) when
#: ``cjk_fraction(text) <= LATIN_MAX_CJK_FRACTION``; in between is ``"mixed"``.
LATIN_MAX_CJK_FRACTION = 0.2

#: Stop words voting for a Latin-script language in :func:`guess_latin_language`.
#: Compared after lower-casing and removing accents; the four sets are disjoint
#: after that normalisation (words shared by two languages, such as ``de``,
#: ``la``, ``en``, ``es``, ``was``, ``du``, ``des``, ``y``, were left out).
STOP_WORDS = {
    "en": frozenset("""the and is are of to that it with for has have had were he she they
        how many what this does each if much there her his be by from at do you we more than
        but which""".split()),
    "es": frozenset("""el los las del por con una está esta tiene tienen cuántos cuántas
        cuánto pero para al sus su muy más hay también cada cuando como ella ellos
        lo""".split()),
    "fr": frozenset("""les et est une il elle ils dans pour sur avec pas au aux qui combien
        chaque ce cette sont mais ont nous vous leur fait ou""".split()),
    "de": frozenset("""der die das und ist sind ein eine einen nicht mit von zu dem im auf
        für wie viele hat haben sie er ich auch jeder jede jedes wenn dass oder aber noch
        kostet""".split()),
}

LATIN_LANGUAGES = ("en", "es", "fr", "de")


#: A Latin-script word (letters with their accents and combining marks).
LATIN_WORD = re.compile(
    "[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]"
    "[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff\u0300-\u036f]*"
)


def check_language(lang: str | None, allow_none: bool) -> None:
    """Raise a one-line :class:`ZhuntError` unless ``lang`` is a supported code (or ``None`` when allowed)."""
    if lang is None and allow_none:
        return
    if lang not in SUPPORTED_LANGUAGES:
        raise ZhuntError(
            "lang", f"unknown language {lang!r}; expected one of {', '.join(SUPPORTED_LANGUAGES)}"
        )


def strip_accents(s: str) -> str:
    """Casefold (``ß`` -> ``ss``) and drop combining marks."""
    decomposed = unicodedata.normalize("NFD", s.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_CJK_RANGES = (
    (0x3007, 0x3007), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF), (0x2A700, 0x2EBEF), (0x2F800, 0x2FA1F), (0x30000, 0x3134F),
)


def _is_cjk(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


def is_latin_letter(c: str) -> bool:
    return c.isalpha() and unicodedata.name(c, "").startswith(("LATIN ", "FULLWIDTH LATIN "))


def _script_counts(text: str) -> tuple[int, int]:
    cjk = latin = 0
    for c in text:
        if c.isascii():
            latin += c.isalpha()
        elif _is_cjk(c):
            cjk += 1
        elif is_latin_letter(c):
            latin += 1
    return cjk, latin


def cjk_fraction(text: str) -> float:
    """Share of CJK ideographs among CJK ideographs and Latin letters.

    Parameters
    ----------
    text : str

    Returns
    -------
    float
        ``cjk / (cjk + latin)``; 0.0 when the text has neither. Kana, Hangul,
        digits, punctuation and other scripts are not counted.
    """
    cjk, latin = _script_counts(text)
    return cjk / (cjk + latin) if cjk + latin else 0.0


def classify_language(text: str) -> str:
    """Tag a text by script: ``"zh"`` when :func:`cjk_fraction` ``>= ZH_MIN_CJK_FRACTION`` (0.8),
    ``"en"`` (meaning *Latin script*, whichever Latin language) when it is ``<=
    LATIN_MAX_CJK_FRACTION`` (0.2), ``"mixed"`` in between (both boundaries inclusive), and
    ``"other"`` when the text has no CJK ideograph and no Latin letter (empty, digits,
    punctuation, other scripts)."""
    cjk, latin = _script_counts(text)
    if cjk + latin == 0:
        return "other"
    frac = cjk / (cjk + latin)
    if frac >= ZH_MIN_CJK_FRACTION:
        return "zh"
    if frac <= LATIN_MAX_CJK_FRACTION:
        return "en"
    return "mixed"


def classify_languages(texts) -> list[str]:
    """:func:`classify_language` of every text at once (the same tags), vectorised over code points.

    For long lists of short texts (a vocabulary's decoded tokens): the texts
    are joined into one array of code points, the CJK ideographs and Latin
    letters of each text counted with cumulative sums (the Latin test of a
    non-ASCII character runs once per distinct character), and the counts
    tagged with the thresholds of :func:`classify_language`.

    Parameters
    ----------
    texts : sequence of str
        ``n`` texts.

    Returns
    -------
    list of str
        ``n`` tags in ``{"zh", "en", "mixed", "other"}``.
    """
    import numpy as np

    texts = list(texts)
    if not texts:
        return []
    cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    ends = np.cumsum(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)))
    starts = ends - np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    is_cjk = np.zeros(cps.shape, dtype=bool)
    for lo, hi in _CJK_RANGES:
        is_cjk |= (cps >= lo) & (cps <= hi)
    latin = ((cps >= 0x41) & (cps <= 0x5A)) | ((cps >= 0x61) & (cps <= 0x7A))  # ASCII letters
    other = (cps >= 0x80) & ~is_cjk
    uniq = np.unique(cps[other])
    latin_uniq = uniq[np.fromiter((is_latin_letter(chr(c)) for c in uniq), dtype=bool, count=len(uniq))]
    latin |= other & np.isin(cps, latin_uniq)

    def per_text(flag):
        cum = np.concatenate([[0], np.cumsum(flag, dtype=np.int64)])
        return cum[ends] - cum[starts]

    cjk, lat = per_text(is_cjk), per_text(latin)
    tags = np.full(len(texts), "mixed", dtype=object)
    both = cjk + lat
    frac = np.divide(cjk, both, out=np.zeros(len(texts)), where=both > 0)
    tags[frac <= LATIN_MAX_CJK_FRACTION] = "en"
    tags[frac >= ZH_MIN_CJK_FRACTION] = "zh"
    tags[both == 0] = "other"
    return tags.tolist()


_STOP_NORMALISED = {lg: frozenset(strip_accents(w) for w in ws) for lg, ws in STOP_WORDS.items()}


def guess_latin_language(text: str) -> str | None:
    """Guess en/es/fr/de by stop-word votes.

    Parameters
    ----------
    text : str

    Returns
    -------
    str or None
        The language whose :data:`STOP_WORDS` occur most often among the
        words of ``text`` (lower-cased, accents removed; every occurrence is a
        vote), or ``None`` when no stop word occurs or the top two tie.
    """
    votes = dict.fromkeys(LATIN_LANGUAGES, 0)
    for m in LATIN_WORD.finditer(text):
        w = strip_accents(m.group())
        for lg in LATIN_LANGUAGES:
            if w in _STOP_NORMALISED[lg]:
                votes[lg] += 1
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    if ranked[0][1] == 0 or ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]
