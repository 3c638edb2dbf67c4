"""Input checks below the CLI: prompt cells, context length, model-source schema, parse-time
minimums and broken model folders (the CLI rows are in test_bad_inputs.py)."""

import inspect
import pickle
from pathlib import Path

import pandas as pd
import pytest
import yaml

from zhunt.config import (MIN_PROBLEMS, check_organism_languages, check_problem_counts, check_schema, merge,
                          organism_train_spec)
from zhunt.errors import ZhuntError
from zhunt.data.prompts import INT64_MAX, INT64_MIN, check_context_length, check_text, load_prompt_table, to_long

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
HEADER = "id\tcategory\tanswer\ten\tzh"


def table(tmp_path, *rows, name="t.tsv", end="\n"):
    path = tmp_path / name
    path.write_text(end.join([HEADER, *rows]) + end, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- prompt cells


@pytest.mark.parametrize("text, message", [
    ("\u200b", "empty text (only invisible characters: U+200B)"),
    ("\u200b \ufeff\u2060", "empty text (only invisible characters: U+200B, U+2060, U+FEFF)"),
    ("  ", "empty text"),
    ("a\x00b", "text contains a NUL character"),
    ("a\x07b", "text contains a control character U+0007"),
    ('"What is 2 plus 3?"', "quote-wrapped cell"),
    (" What?", "starts or ends with whitespace"),
])
def test_check_text_rejects(text, message):
    with pytest.raises(ZhuntError) as err:
        check_text("t.tsv:2", text, "en")
    assert str(err.value).startswith("t.tsv:2: column 'en': ") and message in str(err.value), str(err.value)


@pytest.mark.parametrize("text", ['He said "five".', '"Five" is the answer?', "二加三等于几？", "a\u200bb"])
def test_check_text_accepts(text):
    check_text("t.tsv:2", text, "en")


def test_answers_at_the_int64_edges(tmp_path):
    ok = table(tmp_path, f"a-1\tadd\t{INT64_MAX}\tWhat?\t几？", f"a-2\tadd\t{INT64_MIN}\tWhy?\t为何？")
    assert load_prompt_table(ok)["answer"].tolist() == [INT64_MAX, INT64_MIN]  # exact, no wrap
    for value, line in ((INT64_MAX + 1, 2), (INT64_MIN - 1, 2), (10 ** 39, 2)):
        bad = table(tmp_path, f"a-1\tadd\t{value}\tWhat?\t几？", name="b.tsv")
        with pytest.raises(ZhuntError, match=rf"^{bad}:{line}: column 'answer': {value} is outside the range"):
            load_prompt_table(bad)


def test_line_endings_and_header_whitespace(tmp_path):
    row = "a-1\tadd\t5\tWhat?\t几？"
    assert len(load_prompt_table(table(tmp_path, row, end="\r\n"))) == 1  # CRLF is fine
    with pytest.raises(ZhuntError, match=r":1: the file uses CR-only \(classic Mac\) line endings"):
        load_prompt_table(table(tmp_path, row, end="\r"))
    mixed = tmp_path / "m.tsv"
    mixed.write_text(f"{HEADER}\n{row}\rx\n", encoding="utf-8")
    with pytest.raises(ZhuntError, match=r"m.tsv:2: a carriage return \(CR\) that is not part of a CRLF"):
        load_prompt_table(mixed)
    ws = tmp_path / "w.tsv"
    ws.write_text(HEADER.replace("answer", " answer") + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(ZhuntError, match=r"w.tsv:1: header cell ' answer' has leading or trailing whitespace"):
        load_prompt_table(ws)


# --------------------------------------------------------------------------- context length


def test_context_length_counts_like_the_tokenizer(tmp_path, tok):
    """Token counts equal a brute-force per-prompt tokenization; the first prompt over the limit
    (prompt + new tokens > limit) is named with its table line."""
    path = table(tmp_path, "a-1\tadd\t5\tabc\tab", "a-2\tadd\t6\tabcdefghij\tabcd", "a-3\tadd\t7\tab\ta")
    long = to_long(load_prompt_table(path))
    prompts = list(long["text"])
    lengths = [len(tok(p)["input_ids"]) for p in prompts]  # brute force, one prompt at a time
    assert lengths == [len(p) + 1 for p in prompts]  # the char tokenizer: BOS + one token per char
    assert check_context_length(long, prompts, tok, limit=None) == max(lengths)
    assert check_context_length(long, prompts, tok, limit=max(lengths) + 2, max_new_tokens=2) == max(lengths)
    with pytest.raises(ZhuntError) as err:
        check_context_length(long, prompts, tok, limit=max(lengths) + 1, max_new_tokens=2)
    assert str(err.value) == (f"{path}:3: prompt 'a-2' (en): 11 tokens + 2 new tokens exceed the model's context "
                              "of 12 positions (max_position_embeddings); shorten it or lower the new-token budget")


# --------------------------------------------------------------------------- config


@pytest.fixture(scope="module")
def tiny_config():
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    return merge(base, yaml.safe_load((ROOT / "tests/tiny/config.yaml").read_text()))


def test_shipped_configs_pass_the_source_schema(tiny_config):
    check_schema(yaml.safe_load((ROOT / "config.yaml").read_text()), SCHEMA)
    check_schema(tiny_config, SCHEMA)


def test_every_train_argument_is_in_the_schema():
    """The organism's sub-schema lists exactly the keyword arguments a config may set."""
    from zhunt.models.organism import train_organism

    schema = yaml.safe_load(SCHEMA.read_text())
    keys = set(schema["$defs"]["source_organism"]["properties"]["train"]["properties"])
    args = {n for n, p in inspect.signature(train_organism).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert keys == args - {"threads", "verbose"}
    spec = organism_train_spec({"train": {"n_layers": 4}})
    assert spec["n_layers"] == 4 and spec["hidden_size"] == 128 and spec["n_heads"] == 4


@pytest.mark.parametrize("source, where, message", [
    ({"kind": "organism", "trian": {}}, "source.trian", "unknown key (did you mean 'train'?)"),
    ({"kind": "organism", "train": {"n_layer": 4}}, "source.train.n_layer", "unknown key (did you mean 'n_layers'?)"),
    ({"kind": "organism", "train": {"seed": -1}}, "source.train.seed", "-1 is less than the minimum of 0"),
    ({"kind": "gguf_package"}, "source.package", "missing: required for source kind 'gguf_package'"),
    ({"kind": "gguf_package", "package": "p", "repo": "a/b"}, "source.repo", "unknown key (expected one of"),
    ({"kind": "hub", "repo": "a/b", "revision": 3}, "source.revision", "3 is not of type 'string', 'null'"),
    ({"kind": "folder", "path": ""}, "source.path", "'' should be non-empty"),
])
def test_source_schema_messages(tiny_config, source, where, message):
    cfg = merge(tiny_config, {"models": {"x": {"source": source}}})
    with pytest.raises(ZhuntError) as err:
        check_schema(cfg, SCHEMA)
    assert str(err.value).startswith(f"models.x.{where}: {message}"), str(err.value)


def _filled(cfg):
    """``cfg`` with the schema's defaults filled in, as the workflow checks it."""
    from snakemake.utils import validate

    validate(cfg, str(SCHEMA))
    return cfg


def test_problem_counts_and_organism_languages(tiny_config):
    need = max(MIN_PROBLEMS.values())
    cfg = _filled(merge(tiny_config, {"prompts": {"organism": {"n": need}}}))
    check_problem_counts(cfg, {})
    with pytest.raises(ZhuntError, match=rf"^prompts.organism.n: {need - 1} problems .* needs at least {need}$"):
        check_problem_counts(merge(cfg, {"prompts": {"organism": {"n": need - 1}}}), {})
    hand = _filled(merge(cfg, {"prompts": {"small": {"path": "s.tsv"}},
                               "models": {"organism-tiny": {"promptset": "small"}}}))
    with pytest.raises(ZhuntError, match="^s.tsv: 2 problems in prompt set 'small'"):
        check_problem_counts(hand, {"small": 2})
    check_organism_languages(cfg)
    with pytest.raises(ZhuntError, match=r"^prompts.organism.languages\[0\]: 'de': the organism"):
        check_organism_languages(merge(cfg, {"prompts": {"organism": {"languages": ["de", "en"]}}}))


# --------------------------------------------------------------------------- broken model folders


def _folder(tmp_path, make_tiny_qwen2_folder):
    import shutil

    src, _ = make_tiny_qwen2_folder(1, 0)
    return Path(shutil.copytree(src, tmp_path / "m"))


def test_broken_model_folders(tmp_path, make_tiny_qwen2_folder):
    from zhunt.models import load_model

    folder = _folder(tmp_path, make_tiny_qwen2_folder)
    load_model(folder, device="cpu")
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ZhuntError, match=r"model.safetensors: not a safetensors file: a Python pickle"):
        load_model(folder, device="cpu")
    weights.write_bytes(good[: len(good) // 3])  # the header parses, the data is cut short
    with pytest.raises(ZhuntError, match=rf"model.safetensors: truncated safetensors file: {len(good) // 3} bytes, "
                                         rf"its header describes {len(good)}"):
        load_model(folder, device="cpu")
    weights.write_bytes(b"\xff" * 8 + good[8:])
    with pytest.raises(ZhuntError, match=r"model.safetensors: not a safetensors file: truncated or corrupt"):
        load_model(folder, device="cpu")
    weights.write_bytes(good)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ZhuntError, match=r"tokenizer.json: missing: the folder has no tokenizer files"):
        load_model(folder, device="cpu")


def test_gguf_magic_and_pin(tmp_path):
    from zhunt.models.gguf import check_gguf_magic, sha256_file, verify_sha256

    path = tmp_path / "x.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ZhuntError, match=r"^models.x.source.sha256: not pinned: nothing vouches for x.gguf"):
        verify_sha256("x", path, [])
    with pytest.raises(ZhuntError, match=r"x.gguf: not a GGUF file \(starts with b'PK\\x03\\x04'"):
        verify_sha256("x", path, [("pin", sha256_file(path))])
    path.write_bytes(b"GGUF\x03\x00")
    check_gguf_magic("x", path)
