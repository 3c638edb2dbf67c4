"""Tests for zhunt.data.number_words, number_parsing, answers and language_id: number words, number
extraction, answer extraction, scripts."""

from __future__ import annotations

import random

import pytest

from zhunt.errors import ZhuntError
from zhunt.data.answers import cut_at_next_question, extract_answer
from zhunt.data.language_id import LATIN_MAX_CJK_FRACTION, STOP_WORDS, SUPPORTED_LANGUAGES, ZH_MIN_CJK_FRACTION, cjk_fraction, classify_language, classify_languages, guess_latin_language
from zhunt.data.number_parsing import find_numbers, parse_number
from zhunt.data.number_words import number_to_words

LANGS = ("en", "zh", "es", "fr", "de")

# ---------------------------------------------------------------------------
# Independently known spellings (so the round trip cannot pass with a wrong but
# self-consistent speller).
# ---------------------------------------------------------------------------

KNOWN = {
    "en": {
        0: "zero", 7: "seven", 13: "thirteen", 21: "twenty-one", 37: "thirty-seven",
        40: "forty", 100: "one hundred", 105: "one hundred five",
        1234: "one thousand two hundred thirty-four", 10010: "ten thousand ten",
        1_000_000: "one million", 1_000_000_000: "one billion", -7: "minus seven",
    },
    "zh": {
        0: "零", 10: "十", 15: "十五", 20: "二十", 37: "三十七", 105: "一百零五", 110: "一百一十",
        1005: "一千零五", 1010: "一千零一十", 10010: "一万零一十", 12345: "一万二千三百四十五",
        20000: "二万", 100000: "十万", 100010: "十万零一十", 1_000_000: "一百万",
        100_000_001: "一亿零一", 1_000_000_000: "十亿", -37: "负三十七",
    },
    "es": {
        0: "cero", 1: "uno", 15: "quince", 16: "dieciséis", 21: "veintiuno", 22: "veintidós",
        37: "treinta y siete", 100: "cien", 101: "ciento uno", 105: "ciento cinco",
        500: "quinientos", 700: "setecientos", 1000: "mil", 2000: "dos mil",
        21000: "veintiún mil", 100000: "cien mil", 1_000_000: "un millón",
        2_000_000: "dos millones", 1_000_000_000: "mil millones", -7: "menos siete",
    },
    "fr": {
        0: "zéro", 17: "dix-sept", 21: "vingt et un", 37: "trente-sept", 70: "soixante-dix",
        71: "soixante et onze", 72: "soixante-douze", 80: "quatre-vingts", 81: "quatre-vingt-un",
        90: "quatre-vingt-dix", 91: "quatre-vingt-onze", 99: "quatre-vingt-dix-neuf",
        100: "cent", 101: "cent un", 200: "deux cents", 201: "deux cent un", 1000: "mille",
        2000: "deux mille", 80000: "quatre-vingt mille", 200000: "deux cent mille",
        1_000_000: "un million", 2_000_000: "deux millions", 1_000_000_000: "un milliard",
        -7: "moins sept",
    },
    "de": {
        0: "null", 1: "eins", 12: "zwölf", 16: "sechzehn", 17: "siebzehn", 21: "einundzwanzig",
        30: "dreißig", 37: "siebenunddreißig", 105: "einhundertfünf", 1000: "eintausend",
        1001: "eintausendeins", 21000: "einundzwanzigtausend", 1_000_000: "eine Million",
        2_000_000: "zwei Millionen", 1_000_000_000: "eine Milliarde", -7: "minus sieben",
    },
}


@pytest.mark.parametrize(
    "lang,n,expected", [(lg, n, w) for lg, table in KNOWN.items() for n, w in table.items()]
)
def test_known_spellings(lang, n, expected):
    assert number_to_words(n, lang) == expected
    assert parse_number(expected, lang) == n


def test_languages_constant():
    assert SUPPORTED_LANGUAGES == LANGS


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGS)
def test_round_trip_0_to_10000(lang):
    bad = [n for n in range(10001) if parse_number(number_to_words(n, lang), lang) != n]
    assert bad == []


@pytest.mark.parametrize("lang", LANGS)
def test_round_trip_big_and_negative(lang):
    rng = random.Random(1234)
    sample = [rng.randint(-10**9, 10**9) for _ in range(600)]
    sample += [10**9, -10**9, 10**6, 10**6 + 1, 21 * 10**6, 10**5 + 10, 100_000_001, -1,
               999_999_999, 1_001_001, 80_080_080, 200_200_200, 101_101_101]
    for n in sample:
        words = number_to_words(n, lang)
        assert parse_number(words, lang) == n, (n, words)
        assert parse_number(words) == n, (n, words)  # any language


@pytest.mark.parametrize("lang", LANGS)
def test_round_trip_inside_text(lang):
    for n in list(range(0, 10001, 97)) + [-42, 1_234_567]:
        words = number_to_words(n, lang)
        text = f"x: {words} !"
        assert find_numbers(text, lang) == [(n, 3, 3 + len(words))], words


def test_number_to_words_errors():
    with pytest.raises(ValueError):
        number_to_words(10**9 + 1, "en")
    with pytest.raises(ValueError):
        number_to_words(-(10**9) - 1, "zh")
    with pytest.raises(TypeError):
        number_to_words(3.0, "en")
    with pytest.raises(TypeError):
        number_to_words(True, "en")
    with pytest.raises(ZhuntError):
        number_to_words(3, "it")
    with pytest.raises(ZhuntError):
        parse_number("3", "EN")
    with pytest.raises(ZhuntError):
        find_numbers("3", "ja")
    with pytest.raises(ZhuntError):
        extract_answer("3", "pt")


# ---------------------------------------------------------------------------
# parse_number variants
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,lang,expected", [
    # digits
    ("37", None, 37), (" 37 ", "en", 37), ("37.", "en", 37), ("+37", None, 37),
    ("-12", None, -12), ("−12", None, -12), ("－１２", None, -12),
    ("３７", None, 37), ("１，２３４", None, 1234),
    ("1,234", None, 1234), ("1,234", "en", 1234), ("1,234", "de", 1234),
    ("1 234", "en", 1234), ("1 234", "fr", 1234), ("1\u202f234", "fr", 1234),
    ("1.234", "de", 1234), ("1.234", "es", 1234), ("1.234", "fr", 1234),
    ("1.234.567", "de", 1234567), ("1,234,567", "en", 1234567), ("1'234", "de", 1234),
    ("1.234", "en", None), ("1.234", None, None),
    ("3.0", None, 3), ("12.00", "en", 12), ("3,0", "fr", 3), ("1.234,00", "de", 1234),
    ("3.5", None, None), ("3,5", "de", None),
    ("3万", None, 30000), ("1.5万", "zh", 15000), ("2亿", None, 200_000_000),
    ("1.5 million", "en", 1_500_000), ("3 mil", "es", 3000), ("5 Millionen", "de", 5_000_000),
    # en
    ("Thirty-Seven", "en", 37), ("thirty seven", "en", 37), ("THIRTY SEVEN", None, 37),
    ("one hundred and five", "en", 105), ("a hundred", "en", 100),
    ("a thousand", "en", 1000), ("twelve hundred", "en", 1200),
    ("nineteen hundred and eighty-four", "en", 1984),
    ("one thousand and one", "en", 1001), ("negative five", "en", -5),
    # zh
    ("两万", "zh", 20000), ("两百", "zh", 200), ("二〇二三", "zh", 2023), ("一〇五", None, 105),
    ("一十五", "zh", 15), ("一百一十", "zh", 110), ("一百五", "zh", 150), ("三万五", "zh", 35000),
    ("壹佰零伍", "zh", 105), ("兩萬", "zh", 20000), ("負三", "zh", -3), ("十万零一十", "zh", 100010),
    # es
    ("veintiún mil", "es", 21000), ("veintiun mil", "es", 21000), ("Veintiuna", None, 21),
    ("doscientas", "es", 200), ("treinta y un mil", "es", 31000), ("ciento un", "es", 101),
    ("dieciseis", "es", 16), ("un millón", "es", 10**6), ("dos mil millones", "es", 2 * 10**9),
    ("una", "es", 1), ("un", "es", 1),
    # fr
    ("quatre-vingt", "fr", 80), ("quatre vingt dix neuf", "fr", 99),
    ("deux-cent-trente-et-un", "fr", 231), ("deux cent", "fr", 200),
    ("septante-deux", "fr", 72), ("huitante", "fr", 80), ("octante", "fr", 80),
    ("nonante et un", "fr", 91), ("soixante-onze", "fr", 71), ("vingt-et-une", "fr", 21),
    ("zero", "fr", 0), ("mille et un", "fr", 1001), ("un", "fr", 1), ("une", "fr", 1),
    # de
    ("dreissig", "de", 30), ("DREISSIG", None, 30), ("siebenunddreissig", "de", 37),
    ("fuenfundzwanzig", "de", 25), ("funfundzwanzig", "de", 25), ("hundertfünf", "de", 105),
    ("einhundertfünf", "de", 105), ("tausend", "de", 1000), ("tausendundeins", "de", 1001),
    ("zwo", "de", 2), ("ein", "de", 1), ("eine Million", "de", 10**6),
    ("zwei Millionen dreihunderttausend", "de", 2_300_000),
])
def test_parse_number_variants(text, lang, expected):
    assert parse_number(text, lang) == expected


@pytest.mark.parametrize("text,lang", [
    ("", None), ("   ", None), ("abc", None), ("seven seven", "en"), ("twenty thirty", "en"),
    ("a", None), ("an", "en"), ("and", "en"), ("hundred and", "en"), ("3 4", "en"),
    ("三四", "zh"), ("一百零", "zh"), ("十十", "zh"), ("千", "zh"), ("12 apples", "en"),
    ("thirty-seven", "zh"), ("三十七", "en"), ("dix-deux", "fr"), ("cents", "fr"),
    ("million", "en"), ("one thousand two thousand", "en"), ("siebenund", "de"),
])
def test_parse_number_rejects(text, lang):
    assert parse_number(text, lang) is None


def test_parse_number_language_restriction():
    assert parse_number("once", "es") == 11
    assert parse_number("once", "en") is None
    assert parse_number("once") == 11  # lang=None: any language's words
    assert parse_number("trente-sept", "de") is None


# ---------------------------------------------------------------------------
# find_numbers
# ---------------------------------------------------------------------------

def values(text, lang=None):
    return [v for v, _, _ in find_numbers(text, lang)]


@pytest.mark.parametrize("text,lang,expected", [
    ("thirty-seven apples", None, [(37, 0, 12)]),
    ("三十七个苹果", None, [(37, 0, 3)]),
    ("a total of 1,250 km", None, [(1250, 11, 16)]),
    ("答案是１２", None, [(12, 3, 5)]),
    ("x = -5", None, [(-5, 4, 6)]),
])
def test_find_numbers_spans(text, lang, expected):
    assert find_numbers(text, lang) == expected
    for v, s, e in expected:
        assert parse_number(text[s:e], lang) == v


@pytest.mark.parametrize("text,lang,expected", [
    ("She had 3 apples and bought twenty-one more, 24 in total.", "en", [3, 21, 24]),
    ("one hundred and five people and two dogs", "en", [105, 2]),
    ("five and six", "en", [5, 6]),
    ("seven seven", "en", [7, 7]),
    ("A dog has four legs; a hundred dogs have 400.", "en", [4, 100, 400]),
    ("小明有三个苹果，又买了十五个，一共十八个。", "zh", [3, 15, 18]),
    ("他们一起吃了两个，十分好吃", "zh", [2]),
    ("三四个人", "zh", [3, 4]),
    ("百分之五十", "zh", [50]),
    ("收入3万元，5千克", "zh", [30000, 5]),
    ("二〇二三年", "zh", [2023]),
    ("Juan tiene veintiún mil pesos y compra tres libros.", "es", [21000, 3]),
    ("Tiene un perro y treinta y siete gatos.", "es", [37]),
    ("Il a un chat et vingt et un chiens.", "fr", [21]),
    ("Il y a quatre-vingt-dix-neuf ballons et 1 200 billes.", "fr", [99, 1200]),
    ("Er hat dreiundzwanzig Äpfel und einen Apfel, also 24.", "de", [23, 24]),
    ("Es sind 1.234 Euro und 3,5 Kilo.", "de", [1234]),
    ("I have 3.5 kg and 2 bags", "en", [2]),
    ("3,5", "en", [3, 5]),
    ("Pay $1,234.00 now", "en", [1234]),
    ("10 - 3 = 7", None, [10, 3, 7]),
    ("ten minus three is seven", "en", [10, 3, 7]),
    ("It was minus seven degrees", "en", [-7]),
    ("温度是负三度", "zh", [-3]),
    ("COVID-19 in 2020-03", None, [19, 2020, 3]),
    ("(-4) and x-2", None, [-4, 2]),
    ("１２３ and ４５", None, [123, 45]),
    ("1.5 million people", "en", [1_500_000]),
    ("", None, []),
    ("no numbers here", "en", []),
])
def test_find_numbers_values(text, lang, expected):
    assert values(text, lang) == expected


def test_find_numbers_language_restriction():
    assert values("三十七 and thirty", "en") == [30]
    assert values("三十七 and thirty", "zh") == [37]
    assert values("三十七 and thirty") == [37, 30]
    assert values("once upon a time", "en") == []
    assert values("once upon a time") == [11]  # lang=None: Spanish "once"
    assert values("trente et un", "fr") == [31]
    assert values("trente et un", "de") == []


def test_find_numbers_articles_not_numbers():
    assert values("a cat and an apple", "en") == []
    assert values("un chat, une pomme", "fr") == []
    assert values("una casa, un perro", "es") == []
    assert values("ein Haus, eine Katze", "de") == []
    assert values("uno", "es") == [1]
    assert values("eins", "de") == [1]


def test_find_numbers_spans_are_substrings():
    text = "Total: ３７ items, then 1 234 (fr) et quatre-vingts -5."
    for v, s, e in find_numbers(text, "fr"):
        assert parse_number(text[s:e], "fr") == v


# ---------------------------------------------------------------------------
# cut and extract_answer
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("The answer is 5.\n\nQuestion: Tom has 7 apples.", "The answer is 5.\n\n"),
    ("5 apples\nQ: next 9", "5 apples\n"),
    ("Réponse 5.\nQuestion : combien 9 ?", "Réponse 5.\n"),
    ("答案是5。\n\n问题：小明有9个", "答案是5。\n\n"),
    ("答案是5。\n问：小明有9个", "答案是5。\n"),
    ("Son 5.\n\nPregunta: Juan 9", "Son 5.\n\n"),
    ("Son 5.\n\n¿Cuántos hay? 9", "Son 5."),
    ("Also 5.\nFrage: Wie viele 9", "Also 5.\n"),
    ("so 5\n**Question 2:** 9", "so 5\n"),
    ("Question: 9", ""),
    ("No question here, Q is a letter: 9", "No question here, Q is a letter: 9"),
])
def test_cut_at_next_question(text, expected):
    assert cut_at_next_question(text) == expected


@pytest.mark.parametrize("text,lang,expected", [
    # (a)+(b) marker, then a new few-shot item whose numbers must be ignored
    ("She has 16 - 3 - 4 = 9 eggs. The answer is 18.\n\nQuestion: Tom has 7 apples.", "en", 18),
    ("一共 3 个。答案是二十。\n\n问题：小明有7个苹果。", "zh", 20),
    ("Tiene 3. La respuesta es 12.\n\nPregunta: Juan tiene 7.", "es", 12),
    ("Il a 3 pommes. La réponse est 12.\n\nQuestion : Paul a 7 pommes.", "fr", 12),
    ("Er hat 3. Die Antwort ist 12.\n\nFrage: Paul hat 7.", "de", 12),
    # (b) marker present: first number after the LAST marker
    ("answer: 4, no wait, the answer is 6 because 6 > 4", "en", 6),
    ("5 + 3 = 8 apples, she gives 2 away", "en", 8),
    ("#### 72", "en", 72),
    ("The answer is thirty-seven (37).", "en", 37),
    ("答案是 5，因为 2+3 等于 5。还剩 1", "zh", 5),
    ("答案：十二个", "zh", 12),
    ("答：7只", "zh", 7),
    ("respuesta: veintiuno", "es", 21),
    ("La respuesta correcta es 9, no 8.", "es", 9),
    ("réponse : quatre-vingts, pas 81", "fr", 80),
    ("Antwort: 7, nicht 8", "de", 7),
    ("Die Antwort lautet 1.234 Euro.", "de", 1234),
    ("The answer is 5. Then the answer is", "en", 5),  # nothing after the last marker
    # (c) no marker: last number
    ("We get 12 apples. Then 3 more, so 15 apples.", "en", 15),
    ("他先有三个，后来有十五个。", "zh", 15),
    ("Primero 4, luego cinco.", "es", 5),
    ("D'abord 4, puis cinq.", "fr", 5),
    ("Zuerst 4, dann fünf.", "de", 5),
    # (d) no number
    ("I do not know.", "en", None),
    ("我不知道。", "zh", None),
    ("No lo sé.", "es", None),
    ("Je ne sais pas.", "fr", None),
    ("Ich weiß es nicht.", "de", None),
    ("Question: how many?", "en", None),
    # non-integer answers are not replaced by another number
    ("The answer is 3.5", "en", None),
    ("Es sind 2 Kinder, also 2,5 pro Kind.", "de", None),
    # full-width digits
    ("答案是３７。", "zh", 37),
    # negative answers
    ("The answer is -5.", "en", -5),
    ("答案是负五", "zh", -5),
])
def test_extract_answer(text, lang, expected):
    assert extract_answer(text, lang) == expected


def test_extract_answer_lang_none():
    assert extract_answer("The answer is 42.\n\nQ: 5 birds?") == 42
    assert extract_answer("答案是四十二") == 42
    assert extract_answer("so it is quarante-deux") == 42


# ---------------------------------------------------------------------------
# scripts and languages
# ---------------------------------------------------------------------------

def test_thresholds():
    assert ZH_MIN_CJK_FRACTION == 0.8
    assert LATIN_MAX_CJK_FRACTION == 0.2


def test_cjk_fraction():
    assert cjk_fraction("") == 0.0
    assert cjk_fraction("123 !?") == 0.0
    assert cjk_fraction("abc") == 0.0
    assert cjk_fraction("中文") == 1.0
    assert cjk_fraction("中a") == 0.5
    assert cjk_fraction("中 é ß") == pytest.approx(1 / 3)
    assert cjk_fraction("〇ａ") == 0.5  # ideographic zero, full-width Latin
    assert cjk_fraction("カナ") == 0.0  # kana are not ideographs


@pytest.mark.parametrize("text,expected", [
    ("今天天气很好，我们去公园吧。", "zh"),
    ("The weather is nice today.", "en"),
    ("Il fait beau aujourd'hui, très beau.", "en"),  # Latin script
    ("我喜欢Python和Java编程", "mixed"),
    ("", "other"),
    ("123 + 456 = 579!", "other"),
    ("Привет", "other"),
    ("四四四四a", "zh"),  # exactly 0.8
    ("四四四aa", "mixed"),  # 0.6
    ("四aaaa", "en"),  # exactly 0.2
    ("四四aaaa", "mixed"),  # 1/3
    ("四四四四四四四四a", "zh"),  # 8/9
    ("四aaaaa", "en"),  # 1/6
])
def test_classify_language(text, expected):
    assert classify_language(text) == expected


def test_classify_languages_equals_classify_language():
    """The vectorised tagger gives classify_language's tag for every text: the thresholds' edges, every
    script class, empty texts between others, and random mixtures of CJK, Latin, accented and other letters."""
    texts = ["今天天气很好", "The weather", "très ß é", "我喜欢Python", "", "123 + 456", "Привет", "四四四四a",
             "四四四aa", "四aaaa", "四四aaaa", "〇ａ", "カナ", "ｆｕｌｌ", "e\u0301", "Ġhello", "\ufffd", "", "αβγ",
             "𠀀x", "ǅ", "ɐ", "ḁ", "\u00d7\u00f7", "中 é ß"]
    rng = random.Random(0)
    pool = "abcXYZ中文四〇éßÆœǅḁɐαПカ한0123 ,.!\ufffd\u0301ａ𠀀"
    texts += ["".join(rng.choice(pool) for _ in range(rng.randint(0, 6))) for _ in range(3000)]
    assert classify_languages(texts) == [classify_language(t) for t in texts]
    assert classify_languages([]) == []


@pytest.mark.parametrize("text,expected", [
    ("How many apples does she have?", "en"),
    ("The cat is on the table.", "en"),
    ("¿Cuántos libros tiene Juan?", "es"),
    ("El perro está en la casa con los niños.", "es"),
    ("Combien de pommes a-t-il dans son panier ?", "fr"),
    ("Le chat est sur la table avec les enfants.", "fr"),
    ("Wie viele Äpfel hat sie?", "de"),
    ("Der Hund ist im Haus und die Katze auch.", "de"),
    ("", None),
    ("12345", None),
    ("xyzzy plugh", None),
    ("the der", None),  # tie
])
def test_guess_latin_language(text, expected):
    assert guess_latin_language(text) == expected


def test_stop_words_disjoint_after_normalisation():
    import unicodedata

    def norm(w):
        d = unicodedata.normalize("NFD", w.casefold())
        return "".join(c for c in d if not unicodedata.combining(c))

    langs = list(STOP_WORDS)
    assert sorted(langs) == ["de", "en", "es", "fr"]
    for i, a in enumerate(langs):
        for b in langs[i + 1:]:
            overlap = {norm(w) for w in STOP_WORDS[a]} & {norm(w) for w in STOP_WORDS[b]}
            assert not overlap, (a, b, overlap)


def test_extract_answer_rejects_numbers_beyond_int64():
    from zhunt.data.answers import extract_answer

    assert extract_answer("The answer is " + "9" * 30, "en") is None
    assert extract_answer("The answer is 9223372036854775807", "en") == 2**63 - 1
