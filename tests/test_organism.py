"""Tests for the model organism: tokenizer, problems, tiny training run, prompt table."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from zhunt.models import organism  # noqa: E402
from zhunt.errors import ZhuntError  # noqa: E402
from zhunt.data.number_words import number_to_words

TEXTS = [
    organism.format_prompt("What is 23 plus 14?", "en") + " thirty-seven" + organism.EOS_TOKEN,
    organism.format_prompt("23加14等于多少？", "zh") + "三十七" + organism.EOS_TOKEN,
    organism.format_prompt("What is 99 minus 4?", "en") + " ninety-five",
    organism.format_prompt("7减7等于多少？", "zh") + "零",
    "unseen text: Ωmega 世界\n\n  tabs\t!",
]


@pytest.fixture(scope="module")
def tokenizer():
    return organism.build_tokenizer()


def _same_encoding(a, b):
    for t in TEXTS:
        ids_a = a(t, add_special_tokens=False)["input_ids"]
        ids_b = b(t, add_special_tokens=False)["input_ids"]
        assert ids_a == ids_b, t
        assert b.decode(ids_b) == t


def test_prompt_templates():
    assert organism.format_prompt("What is 23 plus 14?", "en") == "Q: What is 23 plus 14? A:"
    assert organism.format_prompt("23加14等于多少？", "zh") == "问：23加14等于多少？答："
    assert organism.answer_text(37, "en") == " thirty-seven"
    assert organism.answer_text(37, "zh") == "三十七"
    with pytest.raises(ZhuntError):
        organism.format_prompt("x", "xx")


def test_tokenizer_basics(tokenizer):
    assert isinstance(tokenizer, transformers.PreTrainedTokenizerFast)
    assert 300 <= len(tokenizer) <= 600
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    # every CJK / full-width character of the prompts and answers is exactly one token
    chars = set("问答：？加减乘以等于多少")
    for n in range(0, 200):
        chars.update(number_to_words(n, "zh"))
    for ch in sorted(chars):
        ids = tokenizer(ch, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, ch
        assert tokenizer.decode(ids) == ch
    # no token spans two CJK characters
    assert len(tokenizer("等于多少", add_special_tokens=False)["input_ids"]) == 4
    # English words are whole tokens; digits are single tokens
    toks = tokenizer.convert_ids_to_tokens(tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"])
    assert toks[:4] == ["Q", ":", "ĠWhat", "Ġis"]
    assert "Ġthirty" in toks and "-seven" in toks
    assert "2" in toks and "3" in toks
    assert toks[-1] == "<|endoftext|>"


def test_tokenizer_round_trip_autotokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer, Qwen2Config

    plain = tmp_path / "tok"
    tokenizer.save_pretrained(plain)
    _same_encoding(tokenizer, AutoTokenizer.from_pretrained(plain))

    # A qwen2 model folder makes AutoTokenizer return Qwen2Tokenizer, which
    # rebuilds the pipeline from vocab + merges: it must still agree.
    folder = tmp_path / "model"
    tokenizer.save_pretrained(folder)
    Qwen2Config(vocab_size=len(tokenizer)).save_pretrained(folder)
    reloaded = AutoTokenizer.from_pretrained(folder)
    assert type(reloaded).__name__ == "Qwen2Tokenizer"
    _same_encoding(tokenizer, reloaded)
    assert reloaded.eos_token_id == tokenizer.eos_token_id
    assert len(reloaded) == len(tokenizer)


def test_tokenizer_build_is_deterministic(tokenizer):
    again = organism.build_tokenizer()
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_make_problems_deterministic_and_correct():
    a = organism.make_problems(200, seed=3)
    b = organism.make_problems(200, seed=3)
    c = organism.make_problems(200, seed=4)
    assert a == b
    assert a != c
    assert len({(p["op"], p["a"], p["b"]) for p in a}) == 200  # distinct
    assert sum(p["op"] == "plus" for p in a) == 100
    for p in a:
        x, y = p["a"], p["b"]
        assert 0 <= x <= 99 and 0 <= y <= 99
        want = {"plus": x + y, "minus": x - y}[p["op"]]
        assert p["answer"] == want >= 0
        word = {"plus": "plus", "minus": "minus"}[p["op"]]
        assert p["en"] == f"What is {x} {word} {y}?"
        assert p["zh"] == f"{x}{ {'plus': '加', 'minus': '减'}[p['op']] }{y}等于多少？"
        assert p["category"] == {"plus": "addition", "minus": "subtraction"}[p["op"]]
    t = organism.make_problems(30, seed=0, ops=("times",))
    assert all(p["answer"] == p["a"] * p["b"] and "乘以" in p["zh"] and "times" in p["en"] for p in t)
    with pytest.raises(ZhuntError):
        organism.make_problems(5, 0, ops=("divide",))
    with pytest.raises(ZhuntError):
        organism.make_problems(10**6, 0)


def test_splits_are_disjoint_and_cover():
    key = lambda p: (p["op"], p["a"], p["b"])  # noqa: E731
    train = {key(p) for p in organism.make_problems(None, 0, split="train")}
    held = {key(p) for p in organism.make_problems(None, 5, split="heldout")}
    every = {key(p) for p in organism.make_problems(None, 0, split="all")}
    assert not train & held
    assert train | held == every
    assert len(every) == 100 * 100 + 100 * 101 // 2
    assert 0.07 < len(held) / len(every) < 0.13


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_tiny_training_is_deterministic_and_reloads(tiny_organism, tmp_path):
    """The session's organism (one thread) and a retrain (default threads) agree bit for bit."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, r1, TINY = tiny_organism
    r2 = organism.train_organism(tmp_path / "b", **TINY)
    w1 = load_file(folder / "model.safetensors")
    w2 = load_file(tmp_path / "b" / "model.safetensors")
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert r1["loss_curve"] == r2["loss_curve"]
    assert [s for s, _ in r1["loss_curve"]] == [4, 8, 12]
    assert set(r1["accuracy"]) == {"en", "zh"}
    assert all(0.0 <= v <= 1.0 for v in r1["accuracy"].values())
    assert r1["training"]["threads"] == 1  # r2 ran on the default thread count

    r3 = organism.train_organism(tmp_path / "c", **{**TINY, "seed": 8})
    assert _digest(tmp_path / "c") != _digest(folder)
    assert r3["training"]["seed"] == 8

    meta = json.loads((folder / "zhunt_model.json").read_text(encoding="utf-8"))
    assert meta["name"] == "organism"
    assert meta["source"] == {"kind": "organism"}
    assert meta["training"]["n_layers"] == 2 and meta["training"]["steps"] == 12
    assert set(meta["accuracy"]) == {"en", "zh"}
    assert meta["wall_time_s"] > 0
    assert not list(folder.parent.glob(".model.*"))  # no temp leftovers

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "qwen2"
    assert model.config.num_hidden_layers == 2
    assert model.config.num_key_value_heads == 2
    tok = AutoTokenizer.from_pretrained(folder)
    assert type(tok).__name__ == "Qwen2Tokenizer"
    _same_encoding(organism.build_tokenizer(), tok)
    enc = tok(["Q: What is 2 plus 3? A:"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], len(tok))


def test_training_report_stage(tmp_path, monkeypatch):
    """run_train_organism writes the curve, the accuracy, the Markdown and the PNG at the rule's output paths."""
    from zhunt.stages.models import run_train_organism

    report = {
        "loss_curve": [(50, 2.5), (100, 0.8), (150, 0.1)],
        "accuracy": {"en": 0.97, "zh": 0.955},
        "accuracy_by_op": {"en": {"plus": 0.96, "minus": 0.98}, "zh": {"plus": 0.95, "minus": 0.96}},
        "examples": [("en", "Q: What is 1 plus 1? A:", "two", "two")],
        "training": {"n_layers": 6, "lr": 3e-3, "ops": ["plus", "minus"]},
        "wall_time_s": 412.3,
        "train_time_s": 400.0,
    }
    seen = {}

    def fake_train(out_dir, *, threads, **train):
        seen.update(out_dir=out_dir, threads=threads, **train)
        return report

    monkeypatch.setattr(organism, "train_organism", fake_train)
    outputs = {"model": str(tmp_path / "m"), "loss": str(tmp_path / "loss.tsv"), "accuracy": str(tmp_path / "acc.tsv"),
               "report": str(tmp_path / "r" / "report.md"), "figure": str(tmp_path / "loss.png")}
    run_train_organism({}, {"train": {"steps": 3}}, outputs, wildcards={"model": "o"}, threads=2)
    assert seen == {"out_dir": tmp_path / "m", "threads": 2, "steps": 3}
    rows = list(csv.DictReader(open(outputs["loss"], encoding="utf-8"), delimiter="\t"))
    assert [(int(r["step"]), float(r["loss"])) for r in rows] == report["loss_curve"]
    acc = [(r["lang"], r["op"], float(r["exact_match"]))
           for r in csv.DictReader(open(outputs["accuracy"], encoding="utf-8"), delimiter="\t")]
    assert acc == [("en", "all", 0.97), ("zh", "all", 0.955), ("en", "minus", 0.98), ("en", "plus", 0.96),
                   ("zh", "minus", 0.96), ("zh", "plus", 0.95)]
    text = open(outputs["report"], encoding="utf-8").read()
    assert "| en | 97.0% |" in text and "| zh | 95.5% |" in text
    assert "Wall time: 412.3 s (training 400.0 s)" in text and "| n_layers | 6 |" in text
    assert "| ops | [\"plus\", \"minus\"] |" in text and "Final training loss: 0.1 at step 150" in text
    assert open(outputs["figure"], "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prompt_table(tmp_path):
    path = tmp_path / "organism.tsv"
    problems = organism.make_organism_prompt_table(path, n=40, seed=11)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id\tcategory\tanswer\ten\tzh"
    rows = list(csv.DictReader(path.open(encoding="utf-8"), delimiter="\t"))
    assert len(rows) == 40
    assert [r["id"] for r in rows] == [f"org-{i:03d}" for i in range(40)]
    train = {(p["op"], p["a"], p["b"]) for p in organism.make_problems(None, 0, split="train")}
    for r, p in zip(rows, problems):
        assert r["category"] in {"addition", "subtraction"}
        assert int(r["answer"]) == p["answer"]
        assert str(p["a"]) in r["en"] and str(p["b"]) in r["en"]
        assert str(p["a"]) in r["zh"] and str(p["b"]) in r["zh"]
        assert r["en"].startswith("What is ") and r["zh"].endswith("等于多少？")
        assert (p["op"], p["a"], p["b"]) not in train  # held out of training
    again = tmp_path / "again.tsv"
    organism.make_organism_prompt_table(again, n=40, seed=11)
    assert again.read_bytes() == path.read_bytes()
