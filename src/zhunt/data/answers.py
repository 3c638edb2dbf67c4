"""Answer extraction from a generated continuation: where the answer is, its value and its script.

:func:`cut_at_next_question` drops a continuation's next few-shot item; :func:`extract_answer` and
:func:`answer_span` pick the final numeric answer (answer markers of every language first, then the
last number); :func:`answer_language` tags the script of that answer span only.
"""

from __future__ import annotations

import re

from zhunt.data.language_id import check_language, classify_language
from zhunt.data.number_parsing import integer_value, scan_numbers

#: Markers that start a new few-shot item (matched at the start of a line,
#: case-insensitively, followed by an optional item number and ``:``/``：``).
QUESTION_MARKERS = (
    "Question", "Q", "Problem", "Pregunta", "Problema", "Problème", "Frage", "Aufgabe",
    "问题", "問題", "问", "問", "题目", "題目",
)

#: Regular expressions (case-insensitive) of explicit answer markers.
ANSWER_MARKERS = (
    r"####",
    r"(?<![<>=!])=(?!=)",
    r"\banswer\s+(?:is|was|would\s+be|will\s+be)\b",
    r"\banswer\s*[:：]",
    r"\brespuesta\s+(?:\w+\s+)?(?:es|ser[ií]a|ser[áa])\b",
    r"\brespuesta\s*[:：]",
    r"\br[ée]ponse\s+(?:\w+\s+)?(?:est|serait|sera)\b",
    r"\br[ée]ponse\s*[:：]",
    r"\bantwort\s+(?:\w+\s+)?(?:ist|lautet|w[äa]re)\b",
    r"\bantwort\s*[:：]",
    r"答案(?:是|为|為|应该是|應該是)",
    r"答案\s*[:：]",
    r"答\s*[:：]",
    r"等于|等於",
)

_CUT_RE = re.compile(
    r"^[ \t]*[*#>_ \t]*(?:" + "|".join(re.escape(m) for m in QUESTION_MARKERS)
    + r")[ \t]*(?:\d+[ \t]*)?[*_]*[ \t]*[:：]"
    + r"|\n[ \t]*\n[ \t]*¿",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_RE = re.compile("|".join(f"(?:{m})" for m in ANSWER_MARKERS), re.IGNORECASE)


def cut_at_next_question(text: str) -> str:
    """Keep a generated continuation up to where it starts a new few-shot item.

    Parameters
    ----------
    text : str
        Generated continuation.

    Returns
    -------
    str
        ``text`` up to (not including) the first line that starts with a
        question marker from :data:`QUESTION_MARKERS` (``Question:``, ``Q:``,
        ``Question 3 :``, ``问题：``, ``问：``, ``Pregunta:``, ``Frage:``...,
        case-insensitive, optional Markdown emphasis), or the first blank line
        followed by ``¿``. A continuation that begins with such a marker is cut
        to the empty string.
    """
    m = _CUT_RE.search(text)
    return text if m is None else text[:m.start()]


def extract_answer(text: str, lang: str | None = None) -> int | None:
    """The final numeric answer of a generated continuation.

    Parameters
    ----------
    text : str
        The generated continuation (without the prompt).
    lang : str or None
        Passed to :func:`find_numbers` (which number words count).

    Returns
    -------
    int or None

    Notes
    -----
    Strategy:

    (a) cut the text where a new few-shot item starts
        (:func:`cut_at_next_question`);
    (b) if an answer marker (:data:`ANSWER_MARKERS`: ``answer is``,
        ``answer:``, ``####``, ``=``, ``答案是``, ``答案：``, ``答：``, ``等于``,
        ``la respuesta es``, ``respuesta:``, ``la réponse est``, ``réponse :``,
        ``die Antwort ist``/``lautet``, ``Antwort:``; markers of every language
        are used whatever ``lang``) is present, return the first number after
        the last marker; when no number follows the last marker, the marker
        before it is tried, and so on;
    (c) otherwise the last number of the cut text;
    (d) ``None`` if there is no number.

    When the chosen number is a non-integer decimal (``3.5``) the result is
    ``None`` rather than some other number.
    """
    span = answer_span(text, lang)
    return None if span is None else span[0]


def answer_span(text: str, lang: str | None = None) -> tuple[int | None, int, int] | None:
    """Where :func:`extract_answer` finds the answer: ``(value, start, end)`` or ``None``.

    ``text[start:end]`` is the chosen number (the same choice as
    :func:`extract_answer`; ``value`` is ``None`` for a non-integer decimal);
    ``None`` when the cut text holds no number.
    """
    check_language(lang, allow_none=True)
    cut = cut_at_next_question(text)
    cands = scan_numbers(cut, lang)
    if not cands:
        return None
    for marker in reversed(list(_ANSWER_RE.finditer(cut))):
        for c in cands:
            if c.start >= marker.end():
                return integer_value(c.value), c.start, c.end
    c = cands[-1]
    return integer_value(c.value), c.start, c.end


#: Label of an answer span without letters or ideographs (digits only) or of no answer.
NEUTRAL = "neutral"


def answer_language(text: str, lang: str | None = None) -> str:
    """Script of the extracted answer span only (not of the whole continuation).

    Parameters
    ----------
    text : str
        Generated continuation.
    lang : str or None
        Number words considered by :func:`answer_span`.

    Returns
    -------
    str
        :func:`classify_language` of the span (``"zh"``, ``"en"`` = Latin
        script, ``"mixed"``), or :data:`NEUTRAL` when there is no answer or the
        span has neither ideographs nor Latin letters (``"37"``): such answers
        say nothing about the language.
    """
    span = answer_span(text, lang)
    if span is None:
        return NEUTRAL
    tag = classify_language(cut_at_next_question(text)[span[1]:span[2]])
    return NEUTRAL if tag == "other" else tag


