"""Tests of zhunt.data.prompts: shipped prompt files, validation errors, reshaping, rendering."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import yaml

from zhunt.errors import ZhuntError
from zhunt.data.prompts import (
    KNOWN_LANGUAGES,
    file_sha256,
    load_prompt_table,
    load_templates,
    render_prompt,
    render_prompts,
    to_long,
)

ROOT = Path(__file__).resolve().parents[1]
MATH = ROOT / "resources" / "prompts" / "math.tsv"
FEWSHOT = ROOT / "resources" / "prompts" / "fewshot.tsv"
TEMPLATES = ROOT / "resources" / "prompts" / "templates.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "prompts.schema.yaml"

HEADER = "id\tcategory\tanswer\ten\tzh"
GOOD_ROWS = [
    "add-01\taddition\t5\tTom has 2 apples and gets 3 more. How many apples does he have?\t小明有2个苹果，又得到3个。他有几个苹果？",
    "sub-01\tsubtraction\t4\tThere are 6 birds and 2 fly away. How many are left?\t树上有6只鸟，飞走了2只。还剩几只？",
]


def write_tsv(tmp_path: Path, lines: list[str], name: str = "p.tsv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def raises_at(path: Path, line: int, *fragments: str):
    """Context manager asserting a ZhuntError at ``path:line`` whose message holds ``fragments``."""

    class _Check:
        def __enter__(self):
            self._ctx = pytest.raises(ZhuntError)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._ctx.__exit__(*exc)
            msg = str(self.info.value)
            assert msg.startswith(f"{path}:{line}: "), msg
            assert "\n" not in msg
            for frag in fragments:
                assert frag in msg, msg
            return handled

    return _Check()


# --------------------------------------------------------------------------- shipped files


def test_known_languages():
    assert KNOWN_LANGUAGES == ("en", "zh", "es", "fr", "de")


def test_shipped_math_table():
    df = load_prompt_table(MATH)
    assert list(df.columns) == ["id", "category", "answer", *KNOWN_LANGUAGES]
    assert len(df) >= 60
    counts = Counter(df["category"])
    assert len(counts) == 10 and min(counts.values()) >= 6, counts
    assert df["answer"].dtype == "int64"
    assert df["id"].is_unique
    assert df.attrs["sha256"] == file_sha256(MATH)
    for lang in KNOWN_LANGUAGES:
        assert (df[lang].str.len() > 0).all()
        # each text ends with its question
        assert df[lang].str.endswith("?").all() or df[lang].str.endswith("？").all(), lang
    for _, row in df.iterrows():
        # numbers are Arabic digits in every language: the same multiset everywhere except the
        # clock-time problems (12 h vs 24 h clocks).
        if not row["id"].startswith("time-0"):
            nums = {lang: sorted(re.findall(r"\d+", row[lang])) for lang in KNOWN_LANGUAGES}
            assert len({tuple(v) for v in nums.values()}) == 1, (row["id"], nums)


def test_shipped_fewshot_table_does_not_overlap():
    fs = load_prompt_table(FEWSHOT, languages=list(KNOWN_LANGUAGES))
    math = load_prompt_table(MATH)
    assert len(fs) == 4
    assert not set(fs["id"]) & set(math["id"])
    for lang in KNOWN_LANGUAGES:
        assert not set(fs[lang]) & set(math[lang])


def test_shipped_rows_match_schema_directly():
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    df = load_prompt_table(MATH)
    for rec in df.to_dict("records"):
        rec["answer"] = int(rec["answer"])
        jsonschema.validate(rec, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "x", "category": "c", "answer": "3", "en": "q?"}, schema)


def test_shipped_templates():
    t = load_templates(TEMPLATES)
    assert {"completion", "organism", "chat"} <= set(t["families"])
    org = t["families"]["organism"]
    assert org["prompt"] == {"en": "Q: {question} A:", "zh": "问：{question}答："}
    assert set(t["families"]["completion"]["prompt"]) == set(KNOWN_LANGUAGES)
    assert t["families"]["chat"]["kind"] == "chat"


# --------------------------------------------------------------------------- table errors


def test_good_small_table(tmp_path):
    path = write_tsv(tmp_path, [HEADER, *GOOD_ROWS])
    df = load_prompt_table(path, languages=["zh"])
    assert list(df.columns) == ["id", "category", "answer", "zh"]
    assert df["answer"].tolist() == [5, 4]
    assert df.attrs["lines"] == [2, 3]


def test_malformed_row(tmp_path):
    path = write_tsv(tmp_path, [HEADER, GOOD_ROWS[0], "sub-01\tsubtraction\t4\tonly english?"])
    with raises_at(path, 3, "malformed row", "expected 5", "found 4"):
        load_prompt_table(path)


def test_missing_language_column(tmp_path):
    path = write_tsv(tmp_path, [HEADER, *GOOD_ROWS])
    with raises_at(path, 1, "missing language column 'es'"):
        load_prompt_table(path, languages=["en", "es"])


def test_unknown_language_column(tmp_path):
    path = write_tsv(tmp_path, [HEADER + "\txx", *(r + "\tfoo?" for r in GOOD_ROWS)])
    with raises_at(path, 1, "unknown language column 'xx'", "expected one of en, zh, es, fr, de"):
        load_prompt_table(path)


def test_missing_required_column(tmp_path):
    path = write_tsv(tmp_path, ["id\tcategory\ten", "a-1\tx\tWhat?"])
    with raises_at(path, 1, "missing required column 'answer'"):
        load_prompt_table(path)


def test_duplicate_id_names_both_lines(tmp_path):
    dup = GOOD_ROWS[1].replace("sub-01", "add-01")
    path = write_tsv(tmp_path, [HEADER, GOOD_ROWS[0], "", dup])
    with raises_at(path, 4, "duplicate id 'add-01'", "line 2"):
        load_prompt_table(path)


def test_empty_text(tmp_path):
    row = "mul-01\tmultiplication\t6\tWhat is 2 times 3?\t"
    path = write_tsv(tmp_path, [HEADER, GOOD_ROWS[0], row])
    with raises_at(path, 3, "column 'zh'", "empty text"):
        load_prompt_table(path)


def test_whitespace_only_text(tmp_path):
    row = "mul-01\tmultiplication\t6\t   \t2乘3等于几？"
    path = write_tsv(tmp_path, [HEADER, row])
    with raises_at(path, 2, "column 'en'", "empty text"):
        load_prompt_table(path)


@pytest.mark.parametrize("bad", ["3.5", "five", "", "1e3", " 7"])
def test_non_integer_answer(tmp_path, bad):
    row = f"mul-01\tmultiplication\t{bad}\tWhat is 2 times 3?\t2乘3等于几？"
    path = write_tsv(tmp_path, [HEADER, GOOD_ROWS[0], GOOD_ROWS[1], row])
    with raises_at(path, 4, "column 'answer'", "not an integer"):
        load_prompt_table(path)


def test_bad_id(tmp_path):
    row = "Add 01\taddition\t6\tWhat?\t几？"
    path = write_tsv(tmp_path, [HEADER, row])
    with raises_at(path, 2, "column 'id'", "not a valid id"):
        load_prompt_table(path)


def test_empty_category(tmp_path):
    row = "add-09\t\t6\tWhat?\t几？"
    path = write_tsv(tmp_path, [HEADER, row])
    with raises_at(path, 2, "column 'category'", "empty"):
        load_prompt_table(path)


def test_empty_table(tmp_path):
    path = write_tsv(tmp_path, [HEADER])
    with raises_at(path, 1, "empty table"):
        load_prompt_table(path)
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    with raises_at(empty, 1, "empty file"):
        load_prompt_table(empty)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes((HEADER + "\n" + GOOD_ROWS[0].split("\t小明")[0] + "\tcaf\xe9?\n")
                     .encode("latin-1", errors="replace"))
    with raises_at(path, 2, "UTF-8"):
        load_prompt_table(path)


def test_missing_file(tmp_path):
    with pytest.raises(ZhuntError, match="file not found"):
        load_prompt_table(tmp_path / "nope.tsv")


def test_crlf_and_bom_accepted(tmp_path):
    path = tmp_path / "crlf.tsv"
    path.write_bytes(("\ufeff" + "\r\n".join([HEADER, *GOOD_ROWS]) + "\r\n").encode("utf-8"))
    df = load_prompt_table(path)
    assert df["zh"].iloc[1].endswith("？")


# --------------------------------------------------------------------------- to_long


def test_to_long_shape_and_order(tmp_path):
    df = load_prompt_table(write_tsv(tmp_path, [HEADER, *GOOD_ROWS]))
    long = to_long(df, ["zh", "en"])
    assert list(long.columns) == ["id", "category", "answer", "lang", "text"]
    assert len(long) == 4
    assert long["id"].tolist() == ["add-01", "add-01", "sub-01", "sub-01"]
    assert long["lang"].tolist() == ["zh", "en", "zh", "en"]
    assert long["text"].iloc[0] == df["zh"].iloc[0]
    assert long["answer"].tolist() == [5, 5, 4, 4]
    full = to_long(load_prompt_table(MATH), list(KNOWN_LANGUAGES))
    assert len(full) == 5 * len(load_prompt_table(MATH))
    with pytest.raises(ZhuntError, match="'es' is not a column"):
        to_long(df, ["es"])


# --------------------------------------------------------------------------- rendering


@pytest.fixture(scope="module")
def templates():
    return load_templates(TEMPLATES)


@pytest.fixture(scope="module")
def fewshot():
    return load_prompt_table(FEWSHOT)


def test_render_organism(templates):
    assert render_prompt("What is 23 plus 14?", "en", "organism", templates) == \
        "Q: What is 23 plus 14? A:"
    assert render_prompt("23加14等于多少？", "zh", "organism", templates) == "问：23加14等于多少？答："
    with pytest.raises(ZhuntError, match="no 'es' template"):
        render_prompt("¿Cuánto es 2 más 3?", "es", "organism", templates)


def test_render_completion_two_shots(templates, fewshot):
    shots = fewshot.iloc[:2]
    q = "What is 2 plus 3?"
    ex0, ex1 = fewshot["en"].iloc[0], fewshot["en"].iloc[1]
    a0, a1 = fewshot["answer"].iloc[0], fewshot["answer"].iloc[1]
    expected = (f"Question: {ex0}\nAnswer: {a0}\n\n"
                f"Question: {ex1}\nAnswer: {a1}\n\n"
                f"Question: {q}\nAnswer:")
    assert render_prompt(q, "en", "completion", templates, shots=shots) == expected
    zq = "2加3等于几？"
    zh = render_prompt(zq, "zh", "completion", templates, shots=shots)
    assert zh == (f"问题：{fewshot['zh'].iloc[0]}\n答案：{a0}\n\n"
                  f"问题：{fewshot['zh'].iloc[1]}\n答案：{a1}\n\n"
                  f"问题：{zq}\n答案：")
    fr = render_prompt("Combien font 2 et 3 ?", "fr", "completion", templates)
    assert fr == "Question : Combien font 2 et 3 ?\nRéponse :"
    # long-format shots give the same text
    long_shots = to_long(shots, ["zh", "en"])
    assert render_prompt(q, "en", "completion", templates, shots=long_shots) == expected


def test_render_rejects_question_as_its_own_exemplar(templates, fewshot):
    with pytest.raises(ZhuntError, match="is the question itself"):
        render_prompt(fewshot["en"].iloc[0], "en", "completion", templates, shots=fewshot)


def test_organism_has_no_shot_format(templates, fewshot):
    with pytest.raises(ZhuntError, match="no 'shot' format"):
        render_prompt("What is 1 plus 1?", "en", "organism", templates, shots=fewshot.iloc[:1])


class FakeChatTokenizer:
    """Minimal stand-in for a transformers tokenizer with a chat template."""

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False, **kwargs):
        self.calls.append((messages, tokenize, add_generation_prompt, kwargs))
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")


def test_render_chat(templates, fewshot):
    tok = FakeChatTokenizer()
    out = render_prompt("2加3等于几？", "zh", "chat", templates, tokenizer=tok)
    assert out == "<user>2加3等于几？</user><assistant>"
    messages, tokenize, gen, kwargs = tok.calls[-1]
    assert tokenize is False and gen is True
    assert kwargs == templates["families"]["chat"]["chat_kwargs"]
    out = render_prompt("2加3等于几？", "zh", "chat", templates, shots=fewshot.iloc[:1], tokenizer=tok)
    assert out == (f"<user>{fewshot['zh'].iloc[0]}</user><assistant>{fewshot['answer'].iloc[0]}"
                   "</assistant><user>2加3等于几？</user><assistant>")
    with pytest.raises(ZhuntError, match="needs a tokenizer"):
        render_prompt("2加3等于几？", "zh", "chat", templates)

    class NoTemplate:
        def apply_chat_template(self, *a, **k):
            raise ValueError("Cannot use chat template functions because tokenizer.chat_template is not set")

    with pytest.raises(ZhuntError, match="cannot apply a chat template"):
        render_prompt("What?", "en", "chat", templates, tokenizer=NoTemplate())


def test_render_prompts_batch(templates, fewshot, tmp_path):
    long = to_long(load_prompt_table(write_tsv(tmp_path, [HEADER, *GOOD_ROWS])), ["en", "zh"])
    out = render_prompts(long, "organism", templates)
    assert out == [f"Q: {long['text'].iloc[0]} A:", f"问：{long['text'].iloc[1]}答：",
                   f"Q: {long['text'].iloc[2]} A:", f"问：{long['text'].iloc[3]}答："]
    shot2 = render_prompts(long, "completion", templates, fewshot=fewshot, n_shots=2)
    assert shot2[1] == render_prompt(long["text"].iloc[1], "zh", "completion", templates,
                                     shots=fewshot.iloc[:2])
    with pytest.raises(ZhuntError, match="only 4 exemplars"):
        render_prompts(long, "completion", templates, fewshot=fewshot, n_shots=5)
    with pytest.raises(ZhuntError, match="no few-shot table"):
        render_prompts(long, "completion", templates, n_shots=1)
    with pytest.raises(ZhuntError, match="unknown template family 'nope'"):
        render_prompts(long, "nope", templates)


# --------------------------------------------------------------------------- template errors


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "templates.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, line, fragment", [
    ("families:\n  base:\n    kind: fancy\n    prompt: {en: 'Q: {question}'}\n", 3, "kind"),
    ("families:\n  base:\n    kind: completion\n    prompt:\n      en: 'Q: no placeholder'\n", 5,
     "exactly once"),
    ("families:\n  base:\n    kind: completion\n    prompt:\n      xx: 'Q: {question}'\n", 5,
     "unknown language"),
    ("families:\n  base:\n    kind: completion\n    prompt: {en: 'Q: {question}'}\n"
     "    shot: '{answer}'\n", 5, "must contain {prompt}"),
    ("families:\n  base:\n    kind: completion\n    prompt: {en: 'Q: {question}', zh: '{question}'}\n"
     "    shot: {en: '{prompt} {answer}'}\n", 5, "no entry for language 'zh'"),
    ("families:\n  base:\n    kind: completion\n    prompt: {en: 'Q: {question}'}\n"
     "    chat_kwargs: {a: 1}\n", 5, "only allowed in a chat family"),
    ("families:\n  base:\n    kind: completion\n    promt: {en: 'Q: {question}'}\n", 4, "unknown key"),
    ("families: {}\n", 1, "non-empty mapping"),
    ("families:\n  base: [unclosed\n", 2, "invalid YAML"),
])
def test_template_errors(tmp_path, text, line, fragment):
    path = write_yaml(tmp_path, text)
    with raises_at(path, line, fragment):
        load_templates(path)


def test_template_shot_string_applies_to_all_languages(tmp_path):
    path = write_yaml(tmp_path, "families:\n  base:\n    kind: completion\n"
                      "    prompt: {en: 'Q: {question} A:', zh: '问：{question}答：'}\n"
                      "    shot: \"{prompt} {answer}\\n\"\n")
    t = load_templates(path)
    assert t["families"]["base"]["shot"] == {"en": "{prompt} {answer}\n", "zh": "{prompt} {answer}\n"}
    shots = pd.DataFrame({"id": ["x-1"], "category": ["c"], "answer": [3], "en": ["1+2?"]})
    assert render_prompt("2+2?", "en", "base", t, shots=shots) == "Q: 1+2? A: 3\nQ: 2+2? A:"
