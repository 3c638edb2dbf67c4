"""Reading numbers in text: digits and number words, one phrase or every number of a text.

Used to score model generations in the five shipped languages (``en``, ``zh``,
``es``, ``fr``, ``de``); spelling is :mod:`zhunt.data.number_words`, answer
extraction :mod:`zhunt.data.answers`, script tags :mod:`zhunt.data.language_id`.

Numbers
-------
:func:`parse_number` reads one whole phrase (digits or number words);
:func:`find_numbers` lists every number of a text with its character span
(:func:`zhunt.data.answers.extract_answer` picks the final answer among them).

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
"""

from __future__ import annotations

import functools
import re
import unicodedata
from fractions import Fraction
from typing import NamedTuple

from zhunt.data.language_id import LATIN_LANGUAGES, LATIN_WORD, check_language, is_latin_letter, strip_accents
from zhunt.data.number_words import (_DE_10_19, _DE_TENS, _DE_UNITS, _ZERO_WORDS, _ZH_DIGIT_CHARS, SIGN_WORDS,
                                     _de_group_variants, _en_below100, _en_group_variants, _es_group_variants,
                                     _fr_group_variants)

#: Words that are also articles: never a number alone in running text.
ARTICLE_WORDS = frozenset({"a", "an", "un", "une", "una", "ein", "eine"})

#: Common Chinese words made of numeral characters that are not numbers.
ZH_NON_NUMERIC_WORDS = (
    "一起", "一样", "一些", "一下", "一直", "一定", "一般", "一切", "一旦", "一致",
    "一边", "一点", "一共", "一半", "一同", "一向", "一律", "一时", "一面", "一再",
    "一贯", "一会", "一番", "一模一样", "统一", "唯一", "逐一", "万一", "千万", "十分",
    "每一",
)

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
    words = {strip_accents(w) for w in _DE_UNITS + _DE_10_19 + _DE_TENS if w}
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
    words = {strip_accents(w) for key in _groups(lang) for w in key}
    words |= set(_SCALES[lang]) | set(_ONE_MULTIPLIERS[lang]) | {_CONNECTORS[lang]}
    words |= {strip_accents(_ZERO_WORDS[lang])} | set(SIGN_WORDS[lang])
    return frozenset(words)


@functools.lru_cache(maxsize=65536)
def _word_morphemes(word: str, lang: str) -> tuple[str, ...] | None:
    """Morphemes of one normalised word in ``lang``, or None if it is not a number word."""
    if lang == "de":
        return _de_split(word) or None
    return (word,) if word in _vocab(lang) else None


def _split_simple(s: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s\-‐‑]+", strip_accents(s)) if w)


@functools.lru_cache(maxsize=None)
def _groups(lang: str) -> dict[tuple[str, ...], int]:
    """Morpheme tuple -> value, for every accepted spelling of 1..999 (and
    ``eleven hundred``-style 1100..9999 in English)."""
    table: dict[tuple[str, ...], int] = {}
    variants = {"en": _en_group_variants, "es": _es_group_variants,
                "fr": _fr_group_variants, "de": _de_group_variants}[lang]
    for n in range(1, 1000):
        for s in variants(n):
            key = (_de_split(strip_accents(s)) if lang == "de" else _split_simple(s))
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
    if tokens == (strip_accents(_ZERO_WORDS[lang]),):
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
    langs = LATIN_LANGUAGES if lang is None else (lang,)
    words: dict[str, int] = {}
    for lg in langs:
        for w, (v, _, _) in _SCALES[lg].items():
            words[w] = v
    words["millón"] = 10**6
    alt = "|".join(sorted(words, key=len, reverse=True))
    return re.compile(rf"[ \u00a0]?({alt})\b", re.IGNORECASE)


def _scale_value(word: str) -> int:
    w = strip_accents(word)
    for lg in LATIN_LANGUAGES:
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
    for m in LATIN_WORD.finditer(text):
        norm = strip_accents(m.group())
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


def scan_numbers(text: str, lang: str | None, whole: bool = False) -> list[_Cand]:
    """All numbers of ``text`` as non-overlapping candidates, in order."""
    work = _digits_ascii(text)
    cands = _scan_digits(work, lang, whole)
    if lang in (None, "zh"):
        cands += _scan_zh(text, whole)
    for lg in (LATIN_LANGUAGES if lang is None else (lang,) if lang != "zh" else ()):
        cands += _scan_latin(text, lg, whole)
    cands.sort(key=lambda c: (c.start, -(c.end - c.start)))
    chosen: list[_Cand] = []
    for c in cands:
        if chosen and c.start < chosen[-1].end:
            continue
        if c.num_start != c.start:  # signed: unary or binary minus?
            before = text[:c.start].rstrip()
            glued = c.start > 0 and (text[c.start - 1].isdigit() or is_latin_letter(text[c.start - 1]))
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


def integer_value(value: Fraction | None) -> int | None:
    """``value`` as an int when it is an integer of magnitude <= :data:`MAX_ANSWER`, else ``None``."""
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
    check_language(lang, allow_none=True)
    s = unicodedata.normalize("NFKC", text).strip().rstrip(_TRAILING_PUNCT).strip()
    if s[:1] == "+":
        s = s[1:].lstrip()
    if not s:
        return None
    cands = scan_numbers(s, lang, whole=True)
    if len(cands) == 1 and cands[0].start == 0 and cands[0].end == len(s):
        return integer_value(cands[0].value)
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
    check_language(lang, allow_none=True)
    out = []
    for c in scan_numbers(text, lang):
        v = integer_value(c.value)
        if v is not None:
            out.append((v, c.start, c.end))
    return out


