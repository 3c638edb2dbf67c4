"""Number words, number extraction and script-based language tags.

Used to score model generations in the five shipped languages (``en``, ``zh``,
``es``, ``fr``, ``de``).

Numbers
-------
:func:`number_to_words` spells an integer in ``[-10**9, 10**9]``;
:func:`parse_number` reads one whole phrase (digits or number words);
:func:`find_numbers` lists every number of a text with its character span;
:func:`extract_answer` picks the final numeric answer of a generated
continuation.

Conventions for digits (shared by :func:`parse_number` and
:func:`find_numbers`):

* Any Unicode decimal digit counts (full-width ``３７`` is 37); ``-``,
  ``−`` and ``－`` are minus signs.
* Thousands separators (a group of 1-3 digits, then groups of exactly three
  digits, one separator kind throughout): ``,``, apostrophe, no-break and thin
  spaces in every language; also ``.`` and a plain space for ``de``/``es``/
  ``fr``. :func:`parse_number` accepts a plain space in every language.
  ``lang=None`` follows the ``en`` rules, so ``1.234`` is a decimal there.
* Decimal marks: ``.`` everywhere, also ``,`` for ``de``/``es``/``fr``
  (``3,5``), tried after the thousands reading (``de`` ``1.234`` is 1234,
  ``3.5`` is a decimal). In ``en``/``zh``/``None`` text ``3,5`` is two numbers.
  Consequence: ``1,250`` is 1250 in every language (``de`` "1,250" meaning
  1.25 is read as 1250).
* Answers are integers: a decimal whose fractional digits are all zero
  (``12.00``) is that integer; any other decimal (``3.5``) is consumed as one
  span but never reported, so it cannot be misread as ``3`` and ``5``.
  :func:`extract_answer` returns ``None`` when the number it picks is such a
  non-integer.
* A digit number directly followed by ``万``/``亿`` (optionally with
  ``百``/``千`` before them: ``3千万``; a bare ``千`` is not a multiplier,
  ``5千克`` is 5 kg), or by a scale word of the language (``thousand``,
  ``million``, ``mil``, ``millones``, ``mille``, ``milliards``, ``Tausend``,
  ``Millionen``...) is multiplied: ``3万`` is 30000, ``1.5 million`` is
  1500000.
* A minus sign (or a sign word: ``minus``, ``menos``, ``moins``, ``负``) makes
  a number negative unless the previous non-space character is a digit or
  ``)`` or ends another number: ``10 - 3`` and ``ten minus three`` give 3,
  ``= -5`` gives -5.

Number words: every language has a strict grammar (below-thousand groups
are looked up in a table generated from the speller plus known variants;
scale words must appear in decreasing order), so ``seven seven`` is two
numbers, not fourteen. In running text, words that are also articles (``a``,
``an``, ``un``, ``une``, ``una``, ``ein``, ``eine``) are never a number on
their own (``un chat``), only inside a longer number (``a hundred``,
``vingt et un``); :func:`parse_number` does accept ``un``, ``une``, ``una``,
``ein`` and ``eine`` as 1. Chinese numerals inside common non-numeric words
(:data:`ZH_NON_NUMERIC_WORDS`, e.g. ``一起``, ``十分``, ``万一``) are skipped.

With ``lang=None`` the word lists of all five languages are used. Some words
are numbers in one language and ordinary words in another (``once`` is 11 in
Spanish, ``cent`` is 100 in French): pass ``lang`` whenever it is known.
With a language given, only that language's number words (and digits) are
recognised.

Scripts
-------
:func:`cjk_fraction` and :func:`classify_language` tag a text by script;
:func:`guess_latin_language` votes with stop words among the Latin-script
languages.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from fractions import Fraction
from typing import NamedTuple

from zhunt.errors import ZhuntError

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

#: Languages this module handles (same codes as ``zhunt.data.prompts.KNOWN_LANGUAGES``).
SUPPORTED_LANGUAGES = ("en", "zh", "es", "fr", "de")

#: :func:`number_to_words` spells integers with ``abs(n) <= MAX_ABS_NUMBER``.
MAX_ABS_NUMBER = 10**9

#: ``classify_language`` says ``"zh"`` when ``cjk_fraction(text) >= ZH_MIN_CJK_FRACTION``.
ZH_MIN_CJK_FRACTION = 0.8

#: ``classify_language`` says ``"en"`` (Latin script) when
#: ``cjk_fraction(text) <= LATIN_MAX_CJK_FRACTION``; in between is ``"mixed"``.
LATIN_MAX_CJK_FRACTION = 0.2

#: Words that carry a minus sign, per language.
SIGN_WORDS = {
    "en": ("minus", "negative"),
    "zh": ("负",),
    "es": ("menos",),
    "fr": ("moins",),
    "de": ("minus",),
}

#: Words that are also articles: never a number alone in running text.
ARTICLE_WORDS = frozenset({"a", "an", "un", "une", "una", "ein", "eine"})

#: Common Chinese words made of numeral characters that are not numbers.
ZH_NON_NUMERIC_WORDS = (
    "一起", "一样", "一些", "一下", "一直", "一定", "一般", "一切", "一旦", "一致",
    "一边", "一点", "一共", "一半", "一同", "一向", "一律", "一时", "一面", "一再",
    "一贯", "一会", "一番", "一模一样", "统一", "唯一", "逐一", "万一", "千万", "十分",
    "每一",
)

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

_LATIN_LANGUAGES = ("en", "es", "fr", "de")


def _check_lang(lang: str | None, allow_none: bool) -> None:
    if lang is None and allow_none:
        return
    if lang not in SUPPORTED_LANGUAGES:
        raise ZhuntError(
            "lang", f"unknown language {lang!r}; expected one of {', '.join(SUPPORTED_LANGUAGES)}"
        )


def _strip_accents(s: str) -> str:
    """Casefold (``ß`` -> ``ss``) and drop combining marks."""
    decomposed = unicodedata.normalize("NFD", s.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# ---------------------------------------------------------------------------
# Spellers (canonical forms) and variant tables
# ---------------------------------------------------------------------------

_EN_ONES = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_EN_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
             "seventeen", "eighteen", "nineteen")
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def _en_below100(n: int) -> str:
    if n < 10:
        return _EN_ONES[n]
    if n < 20:
        return _EN_TEENS[n - 10]
    t, u = divmod(n, 10)
    return _EN_TENS[t] + (f"-{_EN_ONES[u]}" if u else "")


def _en_group(n: int) -> str:
    h, r = divmod(n, 100)
    head = f"{_EN_ONES[h]} hundred" if h else ""
    return " ".join(p for p in (head, _en_below100(r) if r else "") if p)


def _en_group_variants(n: int) -> list[str]:
    h, r = divmod(n, 100)
    if not h:
        return [_en_below100(n)]
    heads = [f"{_EN_ONES[h]} hundred"] + (["a hundred"] if h == 1 else [])
    if not r:
        return heads
    rest = _en_below100(r)
    return [f"{hd} {rest}" for hd in heads] + [f"{hd} and {rest}" for hd in heads]


def _en_words(n: int) -> str:
    parts = []
    for scale, name in ((10**9, "billion"), (10**6, "million"), (10**3, "thousand")):
        q, n = divmod(n, scale)
        if q:
            parts.append(f"{_en_group(q)} {name}")
    if n:
        parts.append(_en_group(n))
    return " ".join(parts)


_ES_UNITS = ("", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve")
_ES_10_29 = ("diez", "once", "doce", "trece", "catorce", "quince", "dieciséis", "diecisiete",
             "dieciocho", "diecinueve", "veinte", "veintiuno", "veintidós", "veintitrés",
             "veinticuatro", "veinticinco", "veintiséis", "veintisiete", "veintiocho",
             "veintinueve")
_ES_TENS = ("", "", "", "treinta", "cuarenta", "cincuenta", "sesenta", "setenta", "ochenta",
            "noventa")
_ES_HUNDREDS = ("", "ciento", "doscientos", "trescientos", "cuatrocientos", "quinientos",
                "seiscientos", "setecientos", "ochocientos", "novecientos")


def _es_apocope(s: str) -> str:
    """``uno`` -> ``un`` before a noun (``veintiún mil``, ``treinta y un millones``)."""
    if s.endswith("veintiuno"):
        return s[:-9] + "veintiún"
    if s.endswith("uno"):
        return s[:-3] + "un"
    return s


def _es_below100(n: int) -> str:
    if n < 10:
        return _ES_UNITS[n]
    if n < 30:
        return _ES_10_29[n - 10]
    t, u = divmod(n, 10)
    return _ES_TENS[t] + (f" y {_ES_UNITS[u]}" if u else "")


def _es_group(n: int, apocope: bool = False) -> str:
    h, r = divmod(n, 100)
    if not h:
        s = _es_below100(r)
    elif not r:
        s = "cien" if h == 1 else _ES_HUNDREDS[h]
    else:
        s = f"{_ES_HUNDREDS[h]} {_es_below100(r)}"
    return _es_apocope(s) if apocope else s


def _es_group_variants(n: int) -> list[str]:
    base = _es_group(n)
    out = [base]
    if base.endswith("uno"):
        out += [_es_apocope(base), base[:-1] + "a"]  # veintiún / veintiuna
    out += [s.replace("ientos", "ientas") for s in out if "ientos" in s]
    return out


def _es_below_million(n: int, apocope: bool = False) -> str:
    th, r = divmod(n, 1000)
    parts = []
    if th:
        parts.append("mil" if th == 1 else f"{_es_group(th, apocope=True)} mil")
    if r:
        parts.append(_es_group(r, apocope))
    return " ".join(parts)


def _es_words(n: int) -> str:
    parts = []
    q, r = divmod(n, 10**6)
    if q:
        parts.append("un millón" if q == 1 else f"{_es_below_million(q, apocope=True)} millones")
    if r:
        parts.append(_es_below_million(r))
    return " ".join(parts)


_FR_0_16 = ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix",
            "onze", "douze", "treize", "quatorze", "quinze", "seize")
_FR_TENS = ("", "", "vingt", "trente", "quarante", "cinquante", "soixante")


def _fr_below100(n: int, final: bool = True) -> str:
    if n <= 16:
        return _FR_0_16[n]
    if n < 20:
        return "dix-" + _FR_0_16[n - 10]
    if n < 70:
        t, u = divmod(n, 10)
        if u == 0:
            return _FR_TENS[t]
        if u == 1:
            return f"{_FR_TENS[t]} et un"
        return f"{_FR_TENS[t]}-{_FR_0_16[u]}"
    if n < 80:
        return "soixante et onze" if n == 71 else "soixante-" + _fr_below100(n - 60)
    if n == 80:
        return "quatre-vingts" if final else "quatre-vingt"
    return "quatre-vingt-" + _fr_below100(n - 80)


def _fr_group(n: int, final: bool = True) -> str:
    """``final``: the group ends the number (``deux cents``, ``quatre-vingts``),
    as opposed to standing before ``mille`` (``deux cent mille``)."""
    h, r = divmod(n, 100)
    if not h:
        return _fr_below100(r, final)
    head = "cent" if h == 1 else f"{_FR_0_16[h]} cent"
    if not r:
        return head + ("s" if h > 1 and final else "")
    return f"{head} {_fr_below100(r, final)}"


def _fr_below100_variants(n: int) -> list[str]:
    out = {_fr_below100(n), _fr_below100(n, final=False)}
    t, u = divmod(n, 10)
    if n >= 20 and u == 1 and n not in (81, 91):
        out.add(_fr_below100(n).replace(" et ", "-"))  # vingt-un, soixante-onze
    # Belgian / Swiss forms.
    for tens, names in ((7, ("septante",)), (8, ("huitante", "octante")), (9, ("nonante",))):
        if t == tens:
            for name in names:
                if u == 0:
                    out.add(name)
                elif u == 1:
                    out.update({f"{name} et un", f"{name}-un"})
                else:
                    out.add(f"{name}-{_FR_0_16[u]}")
    return sorted(out)


def _fr_group_variants(n: int) -> list[str]:
    h, r = divmod(n, 100)
    heads = [""] if not h else (["cent"] if h == 1 else [f"{_FR_0_16[h]} cent"])
    if h > 1 and not r:
        heads.append(f"{_FR_0_16[h]} cents")
    rests = _fr_below100_variants(r) if r else [""]
    out = [" ".join(p for p in (hd, rs) if p) for hd in heads for rs in rests]
    out += [s + "e" for s in out if s == "un" or s.endswith((" un", "-un"))]  # une
    return out


def _fr_words(n: int) -> str:
    parts = []
    q, n = divmod(n, 10**9)
    if q:
        parts.append("un milliard" if q == 1 else f"{_fr_group(q)} milliards")
    q, n = divmod(n, 10**6)
    if q:
        parts.append("un million" if q == 1 else f"{_fr_group(q)} millions")
    q, n = divmod(n, 10**3)
    if q:
        parts.append("mille" if q == 1 else f"{_fr_group(q, final=False)} mille")
    if n:
        parts.append(_fr_group(n))
    return " ".join(parts)


_DE_UNITS = ("", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")
_DE_10_19 = ("zehn", "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn",
             "achtzehn", "neunzehn")
_DE_TENS = ("", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig",
            "neunzig")


def _de_below100(n: int, final: bool = True) -> str:
    if n == 1:
        return "eins" if final else "ein"
    if n < 10:
        return _DE_UNITS[n]
    if n < 20:
        return _DE_10_19[n - 10]
    t, u = divmod(n, 10)
    if not u:
        return _DE_TENS[t]
    return ("ein" if u == 1 else _DE_UNITS[u]) + "und" + _DE_TENS[t]


def _de_group(n: int, final: bool = True) -> str:
    h, r = divmod(n, 100)
    head = (("ein" if h == 1 else _DE_UNITS[h]) + "hundert") if h else ""
    return head + (_de_below100(r, final) if r else "")


def _de_group_variants(n: int) -> list[str]:
    out = {_de_group(n), _de_group(n, final=False)}
    if n // 100 == 1:
        out |= {s[3:] for s in out}  # hundertfünf
    out |= {s[:-1] + "e" for s in out if s.endswith("eins")}  # ... eine Millionen
    return sorted(out)


def _de_multiplier(q: int) -> str:
    """A group before ``Million(en)``/``Milliarde(n)`` (feminine nouns)."""
    if q == 1:
        return "eine"
    s = _de_group(q)
    return s[:-1] + "e" if s.endswith("eins") else s


def _de_words(n: int) -> str:
    parts = []
    q, n = divmod(n, 10**9)
    if q:
        parts.append("eine Milliarde" if q == 1 else f"{_de_multiplier(q)} Milliarden")
    q, n = divmod(n, 10**6)
    if q:
        parts.append("eine Million" if q == 1 else f"{_de_multiplier(q)} Millionen")
    th, r = divmod(n, 1000)
    word = (_de_group(th, final=False) + "tausend" if th else "") + (_de_group(r) if r else "")
    if word:
        parts.append(word)
    return " ".join(parts)


_ZH_DIGIT_CHARS = "零一二三四五六七八九"


def _zh_section(n: int) -> str:
    out = []
    zero = False
    for unit, ch in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // unit % 10
        if d == 0:
            zero = zero or bool(out)
            continue
        if zero:
            out.append("零")
            zero = False
        out.append(_ZH_DIGIT_CHARS[d] + ch)
    return "".join(out)


def _zh_words(n: int) -> str:
    if n == 0:
        return "零"
    parts = []
    started = gap = False
    for val, suffix in ((n // 10**8, "亿"), (n // 10**4 % 10**4, "万"), (n % 10**4, "")):
        if val == 0:
            gap = gap or started
            continue
        if started and (gap or val < 1000):
            parts.append("零")
        parts.append(_zh_section(val) + suffix)
        started, gap = True, False
    s = "".join(parts)
    return s[1:] if s.startswith("一十") else s


_ZERO_WORDS = {"en": "zero", "es": "cero", "fr": "zéro", "de": "null", "zh": "零"}


def number_to_words(n: int, lang: str) -> str:
    """Spell an integer in words.

    Parameters
    ----------
    n : int
        The number, ``-MAX_ABS_NUMBER <= n <= MAX_ABS_NUMBER``.
    lang : str
        One of :data:`SUPPORTED_LANGUAGES`.

    Returns
    -------
    str
        The canonical spelling, lower case except German nouns:

        * ``en``: American, no "and", hyphenated 21-99 (``one hundred
          thirty-four``); negatives ``minus seven``.
        * ``zh``: ``二`` never ``两``, ``零`` for skipped places
          (``一万零一十``), bare ``十`` only at the start (``十五``, ``一百一十``);
          negatives ``负七``.
        * ``es``: ``cien``/``ciento``, ``veintiún mil``, ``un millón``,
          ``mil millones``; negatives ``menos``.
        * ``fr``: traditional spelling (hyphens below 100 only, ``vingt et
          un``, ``quatre-vingts``, ``deux cents`` but ``deux cent mille``);
          negatives ``moins``.
        * ``de``: one compound below a million (``einhundertfünf``,
          ``eintausend``, standalone ``eins``), then ``eine Million``,
          ``zwei Millionen``, ``eine Milliarde``; negatives ``minus``.

    Raises
    ------
    ZhuntError
        For an unknown language.
    ValueError
        When ``n`` is out of range; ``TypeError`` when it is not an ``int``.
    """
    _check_lang(lang, allow_none=False)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number_to_words expects an int, got {type(n).__name__}")
    if abs(n) > MAX_ABS_NUMBER:
        raise ValueError(f"number_to_words supports |n| <= {MAX_ABS_NUMBER}, got {n}")
    if n < 0:
        words = number_to_words(-n, lang)
        return f"负{words}" if lang == "zh" else f"{SIGN_WORDS[lang][0]} {words}"
    if n == 0:
        return _ZERO_WORDS[lang]
    return {"en": _en_words, "zh": _zh_words, "es": _es_words, "fr": _fr_words,
            "de": _de_words}[lang](n)


# ---------------------------------------------------------------------------
# Latin-script number-word grammar
# ---------------------------------------------------------------------------

#: scale word -> (value, may stand without a multiplier, largest multiplier)
_SCALES = {
    "en": {"thousand": (10**3, False, 999), "million": (10**6, False, 999),
           "billion": (10**9, False, 999)},
    "es": {"mil": (10**3, True, 999), "millon": (10**6, False, 999_999),
           "millones": (10**6, False, 999_999), "millardo": (10**9, False, 999),
           "millardos": (10**9, False, 999)},
    "fr": {"mille": (10**3, True, 999), "million": (10**6, False, 999),
           "millions": (10**6, False, 999), "milliard": (10**9, False, 999),
           "milliards": (10**9, False, 999)},
    "de": {"tausend": (10**3, True, 999), "million": (10**6, False, 999),
           "millionen": (10**6, False, 999), "milliarde": (10**9, False, 999),
           "milliarden": (10**9, False, 999)},
}
#: Extra words meaning 1 only as a multiplier (``a hundred``, ``eine Million``).
_ONE_MULTIPLIERS = {"en": {"a"}, "es": set(), "fr": set(), "de": {"eine"}}
#: Connectors allowed between a scale word and the rest (``one thousand and five``).
_CONNECTORS = {"en": "and", "es": "y", "fr": "et", "de": "und"}
_DE_ALIASES = {"fuenf": "funf", "fuenfzehn": "funfzehn", "fuenfzig": "funfzig",
               "zwoelf": "zwolf", "zwo": "zwei"}


@functools.lru_cache(maxsize=None)
def _de_morphemes() -> tuple[str, ...]:
    words = {_strip_accents(w) for w in _DE_UNITS + _DE_10_19 + _DE_TENS if w}
    words |= {"ein", "eine", "und", "hundert", "null", "minus"} | set(_SCALES["de"])
    words |= set(_DE_ALIASES)
    return tuple(sorted(words, key=lambda w: (-len(w), w)))


@functools.lru_cache(maxsize=65536)
def _de_split(word: str) -> tuple[str, ...] | None:
    """Split a normalised German compound into number morphemes (longest first)."""
    if not word:
        return ()
    for m in _de_morphemes():
        if word.startswith(m):
            rest = _de_split(word[len(m):])
            if rest is not None:
                return (_DE_ALIASES.get(m, m),) + rest
    return None


@functools.lru_cache(maxsize=None)
def _vocab(lang: str) -> frozenset[str]:
    if lang == "de":
        return frozenset(_DE_ALIASES.get(m, m) for m in _de_morphemes())
    words = {_strip_accents(w) for key in _groups(lang) for w in key}
    words |= set(_SCALES[lang]) | set(_ONE_MULTIPLIERS[lang]) | {_CONNECTORS[lang]}
    words |= {_strip_accents(_ZERO_WORDS[lang])} | set(SIGN_WORDS[lang])
    return frozenset(words)


@functools.lru_cache(maxsize=65536)
def _word_morphemes(word: str, lang: str) -> tuple[str, ...] | None:
    """Morphemes of one normalised word in ``lang``, or None if it is not a number word."""
    if lang == "de":
        return _de_split(word) or None
    return (word,) if word in _vocab(lang) else None


def _split_simple(s: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s\-‐‑]+", _strip_accents(s)) if w)


@functools.lru_cache(maxsize=None)
def _groups(lang: str) -> dict[tuple[str, ...], int]:
    """Morpheme tuple -> value, for every accepted spelling of 1..999 (and
    ``eleven hundred``-style 1100..9999 in English)."""
    table: dict[tuple[str, ...], int] = {}
    variants = {"en": _en_group_variants, "es": _es_group_variants,
                "fr": _fr_group_variants, "de": _de_group_variants}[lang]
    for n in range(1, 1000):
        for s in variants(n):
            key = (_de_split(_strip_accents(s)) if lang == "de" else _split_simple(s))
            assert key, (lang, n, s)
            table.setdefault(key, n)
    if lang == "en":
        for h in range(11, 100):
            if h % 10 == 0:
                continue
            head = _split_simple(_en_below100(h)) + ("hundred",)
            table[head] = h * 100
            for r in range(1, 100):
                rest = _split_simple(_en_below100(r))
                table[head + rest] = table[head + ("and",) + rest] = h * 100 + r
    return table


@functools.lru_cache(maxsize=65536)
def _parse_scaled(tokens: tuple[str, ...], lang: str) -> int | None:
    scales = _SCALES[lang]
    idx = [i for i, t in enumerate(tokens) if t in scales]
    if not idx:
        return _groups(lang).get(tokens)
    top = max(scales[tokens[i]][0] for i in idx)
    at = [i for i in idx if scales[tokens[i]][0] == top]
    if len(at) != 1:
        return None
    k = at[0]
    _, implicit_one, max_mult = scales[tokens[k]]
    left, right = tokens[:k], tokens[k + 1:]
    if not left:
        if not implicit_one:
            return None
        mult = 1
    elif len(left) == 1 and left[0] in _ONE_MULTIPLIERS[lang]:
        mult = 1
    else:
        mult = _parse_scaled(left, lang)
        if mult is None or not 1 <= mult <= max_mult:
            return None
    if right and right[0] == _CONNECTORS[lang] and lang != "es":
        right = right[1:]
        if not right:
            return None
    rest = _parse_scaled(right, lang) if right else 0
    if rest is None or rest >= top:
        return None
    return mult * top + rest


def _parse_tokens(tokens: tuple[str, ...], lang: str) -> int | None:
    """Value of a morpheme sequence in a Latin-script language, or None."""
    neg = bool(tokens) and tokens[0] in SIGN_WORDS[lang]
    if neg:
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens == (_strip_accents(_ZERO_WORDS[lang]),):
        value = 0
    else:
        value = _parse_scaled(tokens, lang)
        if value is None:
            return None
    return -value if neg else value


# ---------------------------------------------------------------------------
# Chinese numerals
# ---------------------------------------------------------------------------

_ZH_NORMALISE = str.maketrans({
    "两": "二", "兩": "二", "〇": "零", "○": "零", "壹": "一", "贰": "二", "貳": "二",
    "叁": "三", "參": "三", "肆": "四", "伍": "五", "陆": "六", "陸": "六", "柒": "七",
    "捌": "八", "玖": "九", "拾": "十", "佰": "百", "仟": "千", "萬": "万", "億": "亿",
})
_ZH_NUMERAL_CHARS = "零〇○一二两兩三四五六七八九十百千万萬亿億壹贰貳叁參肆伍陆陸柒捌玖拾佰仟"
_ZH_DIGIT_VALUE = {c: i for i, c in enumerate(_ZH_DIGIT_CHARS)}
_ZH_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_ZH_BIG_UNITS = {"万": 10**4, "亿": 10**8}
_ZH_RUN = re.compile(f"[负負]?[{_ZH_NUMERAL_CHARS}]+")


def _parse_zh_units(s: str) -> int | None:
    total = wan = sec = 0
    digit: int | None = None
    last_small = 10**5
    prev = before_digit = None
    last_unit = 0
    seen_wan = False
    for c in s:
        if c in _ZH_DIGIT_VALUE:
            d = _ZH_DIGIT_VALUE[c]
            if digit is not None:
                return None
            if d == 0:
                prev = "zero"
                continue
            digit, before_digit, prev = d, prev, "digit"
        elif c in _ZH_SMALL_UNITS:
            u = _ZH_SMALL_UNITS[c]
            if u >= last_small:
                return None
            if digit is None:
                if u != 10 or sec != 0:
                    return None
                digit = 1
            sec += digit * u
            digit, last_small, prev, last_unit = None, u, "small", u
        elif c in _ZH_BIG_UNITS:
            u = _ZH_BIG_UNITS[c]
            if digit is not None:
                sec += digit
                digit = None
            if u == 10**4:
                if seen_wan or sec == 0:
                    return None
                wan, seen_wan = sec * 10**4, True
            else:
                block = wan + sec
                if block == 0 or total:
                    return None
                total, wan, seen_wan = block * 10**8, 0, False
            sec, last_small, prev, last_unit = 0, 10**5, "big", u
        else:
            return None
    if digit is not None:
        if before_digit in ("small", "big") and last_unit >= 100:
            digit *= last_unit // 10  # colloquial 一百五 = 150, 三万五 = 35000
        sec += digit
    elif prev == "zero":
        return None
    return total + wan + sec


@functools.lru_cache(maxsize=65536)
def _parse_zh(s: str) -> int | None:
    """Value of a Chinese numeral string (optional 负 prefix), or None."""
    neg = s[:1] in ("负", "負")
    if neg:
        s = s[1:]
    if not s:
        return None
    norm = s.translate(_ZH_NORMALISE)
    if all(c in _ZH_DIGIT_VALUE for c in norm):
        if len(norm) == 1:
            value = _ZH_DIGIT_VALUE[norm]
        elif len(norm) >= 3 or "零" in norm:  # positional: 二〇二三
            value = int("".join(str(_ZH_DIGIT_VALUE[c]) for c in norm))
        else:  # 三四 is "three or four", not 34
            return None
    else:
        value = _parse_zh_units(norm)
        if value is None:
            return None
    return -value if neg else value


def _in_zh_stopword(text: str, start: int, end: int) -> bool:
    for w in ZH_NON_NUMERIC_WORDS:
        for p in range(max(0, end - len(w)), start + 1):
            if text.startswith(w, p):
                return True
    return False


# ---------------------------------------------------------------------------
# Scanning
# ---------------------------------------------------------------------------

class _Cand(NamedTuple):
    start: int
    end: int
    value: Fraction | None  # signed; Fraction so decimals stay exact
    num_start: int  # where the unsigned part begins (== start without a sign)


_GROUP_SEPS_BASE = ",'\u00a0\u202f\u2009"
_GROUP_SEPS_EU = _GROUP_SEPS_BASE + ". "
_LATIN_WORD = re.compile(
    "[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]"
    "[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff\u0300-\u036f]*"
)
_WORD_GAP = re.compile(r"[ \t\u00a0\u202f\-‐‑]+")
# 百/千 only before 万/亿: "5千克" is 5 kg, not 5000 kg.
_ZH_SUFFIX = re.compile(r"[百千]?(?:[万萬][亿億]?|[亿億])")
_ASCII_DIGITS = re.compile(r"[0-9]+")
_ZH_SUFFIX_VALUE = {"百": 100, "千": 1000, "万": 10**4, "萬": 10**4, "亿": 10**8, "億": 10**8}
_MINUS_CHARS = {"-": "-", "−": "-", "－": "-", "．": "."}


def _digits_ascii(text: str) -> str:
    """Same-length copy of ``text`` with every decimal digit as ASCII and minus signs as ``-``."""
    out = []
    for c in text:
        if c.isdecimal() and not ("0" <= c <= "9"):
            out.append(str(unicodedata.decimal(c)))
        else:
            out.append(_MINUS_CHARS.get(c, c))
    return "".join(out)


@functools.lru_cache(maxsize=None)
def _scale_suffix_re(lang: str | None) -> re.Pattern:
    langs = _LATIN_LANGUAGES if lang is None else (lang,)
    words: dict[str, int] = {}
    for lg in langs:
        for w, (v, _, _) in _SCALES[lg].items():
            words[w] = v
    words["millón"] = 10**6
    alt = "|".join(sorted(words, key=len, reverse=True))
    return re.compile(rf"[ \u00a0]?({alt})\b", re.IGNORECASE)


def _scale_value(word: str) -> int:
    w = _strip_accents(word)
    for lg in _LATIN_LANGUAGES:
        if w in _SCALES[lg]:
            return _SCALES[lg][w][0]
    raise KeyError(word)  # pragma: no cover


def _scan_digits(work: str, lang: str | None, whole: bool) -> list[_Cand]:
    eu = lang in ("de", "es", "fr")
    seps = _GROUP_SEPS_EU if eu else _GROUP_SEPS_BASE + (" " if whole else "")
    decs = ".," if eu else "."
    out = []
    n = len(work)
    i = 0
    while True:
        m = _ASCII_DIGITS.search(work, i)
        if not m:
            break
        s, j = m.start(), m.end()
        int_str = m.group()
        used = None
        if len(int_str) <= 3:
            while (j + 4 <= n and work[j] in seps and (used is None or work[j] == used)
                   and work[j + 1:j + 4].isascii() and work[j + 1:j + 4].isdigit()
                   and not (j + 4 < n and "0" <= work[j + 4] <= "9")):
                used = work[j]
                int_str += work[j + 1:j + 4]
                j += 4
        frac = ""
        if j + 1 < n and work[j] in decs and work[j] != used and "0" <= work[j + 1] <= "9":
            fm = _ASCII_DIGITS.match(work, j + 1)
            frac, j = fm.group(), fm.end()
        value: Fraction | None = Fraction(f"{int_str}.{frac}" if frac else int_str)
        if s >= 1 and work[s - 1] in ".," and not (s >= 2 and work[s - 2].isalnum()):
            value = None  # ".5": a fraction without its integer part
        zs = _ZH_SUFFIX.match(work, j) if lang in (None, "zh") else None
        if zs and zs.end() > j:
            mult = 1
            for ch in zs.group():
                mult *= _ZH_SUFFIX_VALUE[ch]
            value = None if value is None else value * mult
            j = zs.end()
        elif lang != "zh":
            ls = _scale_suffix_re(lang).match(work, j)
            if ls:
                value = None if value is None else value * _scale_value(ls.group(1))
                j = ls.end()
        start = s
        if s >= 1 and work[s - 1] == "-":
            start = s - 1
            value = None if value is None else -value
        out.append(_Cand(start, j, value, s))
        i = j
    return out


def _scan_zh(text: str, whole: bool) -> list[_Cand]:
    out = []
    for m in _ZH_RUN.finditer(text):
        run = m.group()
        signed = run[0] in "负負"
        body_start = m.start() + (1 if signed else 0)
        body = run[1:] if signed else run
        i = 0
        while i < len(body):
            for j in range(len(body), i, -1):
                v = _parse_zh(body[i:j])
                if v is not None:
                    break
            else:
                i += 1
                continue
            s, e = body_start + i, body_start + j
            if not whole and _in_zh_stopword(text, s, e):
                i = j
                continue
            if i == 0 and signed:
                out.append(_Cand(s - 1, e, Fraction(-v), s))
            else:
                out.append(_Cand(s, e, Fraction(v), s))
            i = j
    return out


def _scan_latin(text: str, lang: str, whole: bool) -> list[_Cand]:
    words = []  # (start, end, normalised, morphemes)
    for m in _LATIN_WORD.finditer(text):
        norm = _strip_accents(m.group())
        words.append((m.start(), m.end(), norm, _word_morphemes(norm, lang)))
    out = []
    k = 0
    while k < len(words):
        if words[k][3] is None:
            k += 1
            continue
        run = [words[k]]
        k += 1
        while (k < len(words) and words[k][3] is not None
               and _WORD_GAP.fullmatch(text, run[-1][1], words[k][0])):
            run.append(words[k])
            k += 1
        i = 0
        while i < len(run):
            found = None
            for j in range(len(run), i, -1):
                if j == i + 1 and not whole and run[i][2] in ARTICLE_WORDS:
                    continue
                tokens = tuple(t for w in run[i:j] for t in w[3])
                v = _parse_tokens(tokens, lang)
                if v is not None:
                    found = (j, v)
                    break
            if found is None:
                i += 1
                continue
            j, v = found
            signed = run[i][3][0] in SIGN_WORDS[lang]
            num_start = run[i + 1][0] if signed else run[i][0]
            out.append(_Cand(run[i][0], run[j - 1][1], Fraction(v), num_start))
            i = j
    return out


def _scan(text: str, lang: str | None, whole: bool = False) -> list[_Cand]:
    """All numbers of ``text`` as non-overlapping candidates, in order."""
    work = _digits_ascii(text)
    cands = _scan_digits(work, lang, whole)
    if lang in (None, "zh"):
        cands += _scan_zh(text, whole)
    for lg in (_LATIN_LANGUAGES if lang is None else (lang,) if lang != "zh" else ()):
        cands += _scan_latin(text, lg, whole)
    cands.sort(key=lambda c: (c.start, -(c.end - c.start)))
    chosen: list[_Cand] = []
    for c in cands:
        if chosen and c.start < chosen[-1].end:
            continue
        if c.num_start != c.start:  # signed: unary or binary minus?
            before = text[:c.start].rstrip()
            glued = c.start > 0 and (text[c.start - 1].isdigit() or _is_latin(text[c.start - 1]))
            binary = bool(before) and (
                before[-1].isdigit() or before[-1] in ")]"
                or (chosen and chosen[-1].end == len(before))
                or glued)  # x-5
            if binary:
                c = _Cand(c.num_start, c.end, None if c.value is None else -c.value, c.num_start)
        chosen.append(c)
    return chosen


#: Largest magnitude :func:`extract_answer` returns; longer digit strings (a model
#: repeating "1111..." for 100 tokens) are not answers and would overflow int64 columns.
MAX_ANSWER = 2**63 - 1


def _as_int(value: Fraction | None) -> int | None:
    if value is None or value.denominator != 1 or abs(value) > MAX_ANSWER:
        return None
    return int(value)


# ---------------------------------------------------------------------------
# Public number API
# ---------------------------------------------------------------------------

_TRAILING_PUNCT = ".。!！?？"


def parse_number(text: str, lang: str | None = None) -> int | None:
    """Read one whole phrase as an integer.

    Parameters
    ----------
    text : str
        The phrase, e.g. ``"1,234"``, ``"３７"``, ``"-12"``, ``"Thirty seven"``,
        ``"one hundred and five"``, ``"两万"``, ``"二〇二三"``, ``"veintiún mil"``,
        ``"quatre-vingt-dix-neuf"``, ``"dreissig"``. The phrase is NFKC-normalised
        (full-width forms); surrounding white space, a leading ``+`` and
        trailing ``. ! ? 。 ！ ？`` are ignored.
    lang : str or None
        Restrict number words to this language; ``None`` tries all five.

    Returns
    -------
    int or None
        The value, or ``None`` when the phrase is not exactly one integer
        (a non-integer decimal such as ``3.5`` gives ``None``; ``3.00`` gives 3).

    Notes
    -----
    Accepted variants: ``en`` "and" and hyphen or space; ``eleven
    hundred``; ``zh`` ``两``/``〇``/``一十``, financial and traditional
    characters, colloquial ``一百五`` (150); ``es`` feminine and apocopated
    forms (``una``, ``veintiún``, ``doscientas``); ``fr`` plural or not
    (``quatre-vingt``, ``deux cent``), 1990 hyphens, ``septante``/
    ``huitante``/``octante``/``nonante``; ``de`` ``hundert``/``einhundert``,
    ``eins``/``ein``, ``zwo``, ``ss`` for ``ß`` and missing umlauts. Accents are
    optional everywhere. Digit conventions are in the module docstring.
    """
    _check_lang(lang, allow_none=True)
    s = unicodedata.normalize("NFKC", text).strip().rstrip(_TRAILING_PUNCT).strip()
    if s[:1] == "+":
        s = s[1:].lstrip()
    if not s:
        return None
    cands = _scan(s, lang, whole=True)
    if len(cands) == 1 and cands[0].start == 0 and cands[0].end == len(s):
        return _as_int(cands[0].value)
    return None


def find_numbers(text: str, lang: str | None = None) -> list[tuple[int, int, int]]:
    """Find every integer in a text.

    Parameters
    ----------
    text : str
        Any text.
    lang : str or None
        Number words of this language only (digits are always found, Chinese
        numerals only for ``"zh"`` or ``None``); ``None`` uses all five.

    Returns
    -------
    list of (int, int, int)
        ``(value, start, end)`` with ``text[start:end]`` the number (sign
        included), in text order, non-overlapping. A maximal run of number
        words is split greedily into the longest valid numbers
        (``"thirty-seven apples"`` -> 37, ``"三十七个"`` -> 37, ``"five and
        six"`` -> 5, 6). Non-integer decimals are left out (their span is not
        re-read as two numbers).
    """
    _check_lang(lang, allow_none=True)
    out = []
    for c in _scan(text, lang):
        v = _as_int(c.value)
        if v is not None:
            out.append((v, c.start, c.end))
    return out


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
    _check_lang(lang, allow_none=True)
    cut = cut_at_next_question(text)
    cands = _scan(cut, lang)
    if not cands:
        return None
    for marker in reversed(list(_ANSWER_RE.finditer(cut))):
        for c in cands:
            if c.start >= marker.end():
                return _as_int(c.value), c.start, c.end
    c = cands[-1]
    return _as_int(c.value), c.start, c.end


# ---------------------------------------------------------------------------
# Scripts and languages
# ---------------------------------------------------------------------------

_CJK_RANGES = (
    (0x3007, 0x3007), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF), (0x2A700, 0x2EBEF), (0x2F800, 0x2FA1F), (0x30000, 0x3134F),
)


def _is_cjk(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


def _is_latin(c: str) -> bool:
    return c.isalpha() and unicodedata.name(c, "").startswith(("LATIN ", "FULLWIDTH LATIN "))


def _script_counts(text: str) -> tuple[int, int]:
    cjk = latin = 0
    for c in text:
        if c.isascii():
            latin += c.isalpha()
        elif _is_cjk(c):
            cjk += 1
        elif _is_latin(c):
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
    """Tag a text by script.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
        ``"zh"`` when ``cjk_fraction >= ZH_MIN_CJK_FRACTION`` (0.8);
        ``"en"`` (meaning *Latin script*, whichever Latin language) when
        ``cjk_fraction <= LATIN_MAX_CJK_FRACTION`` (0.2); ``"mixed"`` in
        between; ``"other"`` when the text has no CJK ideograph and no Latin
        letter (empty, digits, punctuation, other scripts). Both boundaries are
        inclusive.
    """
    cjk, latin = _script_counts(text)
    if cjk + latin == 0:
        return "other"
    frac = cjk / (cjk + latin)
    if frac >= ZH_MIN_CJK_FRACTION:
        return "zh"
    if frac <= LATIN_MAX_CJK_FRACTION:
        return "en"
    return "mixed"


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


_STOP_NORMALISED = {lg: frozenset(_strip_accents(w) for w in ws) for lg, ws in STOP_WORDS.items()}


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
    votes = dict.fromkeys(_LATIN_LANGUAGES, 0)
    for m in _LATIN_WORD.finditer(text):
        w = _strip_accents(m.group())
        for lg in _LATIN_LANGUAGES:
            if w in _STOP_NORMALISED[lg]:
                votes[lg] += 1
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    if ranked[0][1] == 0 or ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]
