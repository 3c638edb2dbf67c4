"""Spelling integers in words in the five shipped languages (``en``, ``zh``, ``es``, ``fr``, ``de``).

:func:`number_to_words` spells an integer in ``[-MAX_ABS_NUMBER, MAX_ABS_NUMBER]``; the
below-thousand ``*_group_variants`` spellers also give :mod:`zhunt.data.number_parsing` the
accepted variants of every group.
"""

from __future__ import annotations

from zhunt.data.language_id import check_language

#: :func:`number_to_words` spells integers with ``abs(n) <= MAX_ABS_NUMBER``.
MAX_ABS_NUMBER = 10**9

#: Words that carry a minus sign, per language.
SIGN_WORDS = {
    "en": ("minus", "negative"),
    "zh": ("负",),
    "es": ("menos",),
    "fr": ("moins",),
    "de": ("minus",),
}

_EN_ONES = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_EN_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
             "seventeen", "eighteen", "nineteen")
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def _below100(n: int, units, low, low_end: int, tens, join: str) -> str:
    """``0 <= n < 100`` in words: ``units[n]`` below 10, ``low[n - 10]`` below ``low_end``, else
    the tens word, then ``join`` and the unit word when there is a unit."""
    if n < 10:
        return units[n]
    if n < low_end:
        return low[n - 10]
    t, u = divmod(n, 10)
    return tens[t] + (f"{join}{units[u]}" if u else "")


def _en_below100(n: int) -> str:
    return _below100(n, _EN_ONES, _EN_TEENS, 20, _EN_TENS, "-")


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


def _scale_parts(n: int, scales, one: str, multiplier) -> tuple[list[str], int]:
    """The words of ``n``'s large scales and the rest below the smallest of them.

    ``scales`` lists ``(scale, singular, plural)`` largest first; a count of one is
    ``"{one} {singular}"``, any other count ``q`` is ``"{multiplier(q)} {plural}"``.
    """
    parts = []
    for scale, singular, plural in scales:
        q, n = divmod(n, scale)
        if q:
            parts.append(f"{one} {singular}" if q == 1 else f"{multiplier(q)} {plural}")
    return parts, n


def _en_words(n: int) -> str:
    parts, n = _scale_parts(n, ((10**9, "billion", "billion"), (10**6, "million", "million"),
                                (10**3, "thousand", "thousand")), "one", _en_group)
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
    return _below100(n, _ES_UNITS, _ES_10_29, 30, _ES_TENS, " y ")


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
    parts, r = _scale_parts(n, ((10**6, "millón", "millones"),), "un",
                            lambda q: _es_below_million(q, apocope=True))
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
    parts, n = _scale_parts(n, ((10**9, "milliard", "milliards"), (10**6, "million", "millions")), "un",
                            _fr_group)
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
    parts, n = _scale_parts(n, ((10**9, "Milliarde", "Milliarden"), (10**6, "Million", "Millionen")), "eine",
                            _de_multiplier)
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
    check_language(lang, allow_none=False)
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


