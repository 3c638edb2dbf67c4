"""The model organism: a small Qwen2 trained from scratch on bilingual word arithmetic.

The organism answers two-operand arithmetic questions with the answer spelled out
in words, in English or Chinese::

    "Q: What is 23 plus 14? A:"   ->  " thirty-seven<|endoftext|>"
    "问：23加14等于多少？答："       ->  "三十七<|endoftext|>"

Answer *value* and answer *language* are both measurable from its output, so a
patching experiment on it has a ground truth to recover.

Pieces
------
* :func:`build_tokenizer` -- a Qwen2-compatible byte-level BPE built offline with
  the ``tokenizers`` library (so ``AutoTokenizer`` reloads it faithfully from a
  ``qwen2`` model folder).
* :func:`make_problems` -- deterministic problem sets; every problem belongs to a
  fixed train or held-out split (a hash of the problem, independent of any seed),
  so a held-out problem is never seen in training whatever the seeds.
* :func:`train_organism` -- trains, evaluates (greedy exact match, per language,
  on held-out problems) and saves a ``save_pretrained`` folder.
* :func:`make_organism_prompt_table` -- the held-out prompt set for the workflow (the
  training report is rendered by :mod:`zhunt.report.organism`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from zhunt.errors import ZhuntError
from zhunt.io import atomic_dir, write_text
from zhunt.progress import Progress

#: Languages the organism speaks.
LANGUAGES: tuple[str, ...] = ("en", "zh")


#: End-of-sequence (also padding) token.
EOS_TOKEN = "<|endoftext|>"

#: Operations: prompt words, prompt-table category and largest operand.
OPS: dict[str, dict] = {
    "plus": {"category": "addition", "en": "plus", "zh": "加", "max_operand": 99},
    "minus": {"category": "subtraction", "en": "minus", "zh": "减", "max_operand": 99},
    "times": {"category": "multiplication", "en": "times", "zh": "乘以", "max_operand": 12},
}

#: Operations used unless told otherwise (``times`` is a lookup table: held-out
#: products cannot be inferred from the training ones, so it is opt-in).
DEFAULT_OPS: tuple[str, ...] = ("plus", "minus")

#: One problem in ``HELDOUT_MODULUS`` (by a stable hash) is held out of training.
HELDOUT_MODULUS = 10

# Qwen2's pre-tokenisation regex (transformers' Qwen2Tokenizer uses the same one).
_QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Largest number whose spelling the tokenizer is built to cover.
_TOKENIZER_MAX_NUMBER = 9999


# --------------------------------------------------------------------------- text


def _number_to_words(n: int, lang: str) -> str:
    from zhunt.data.number_words import number_to_words

    return number_to_words(n, lang)


def answer_words(n: int, lang: str) -> str:
    """The expected answer of the organism for the value ``n`` (no leading space)."""
    return _number_to_words(n, lang)


def answer_text(n: int, lang: str) -> str:
    """The answer as it follows the prompt: ``" thirty-seven"`` (en), ``"三十七"`` (zh)."""
    words = _number_to_words(n, lang)
    return " " + words if lang == "en" else words


@functools.lru_cache(maxsize=1)
def prompt_templates() -> dict[str, str]:
    """The organism's prompt per language (``{question}`` = a problem's question text): the
    ``organism`` family of the shipped templates file (:data:`zhunt.data.prompts.DEFAULT_TEMPLATES`),
    the one place the training format is written."""
    from zhunt.data.prompts import DEFAULT_TEMPLATES, load_templates

    return dict(load_templates(DEFAULT_TEMPLATES)["families"]["organism"]["prompt"])


def format_prompt(question: str, lang: str) -> str:
    """Wrap a question in the organism's prompt template for ``lang``."""
    try:
        return prompt_templates()[lang].format(question=question)
    except KeyError:
        raise ZhuntError("organism.lang", f"unknown language {lang!r}; expected one of {list(LANGUAGES)}")


def _question(a: int, b: int, op: str, lang: str) -> str:
    if lang == "en":
        return f"What is {a} {OPS[op]['en']} {b}?"
    return f"{a}{OPS[op]['zh']}{b}等于多少？"


# ---------------------------------------------------------------------- tokenizer


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Greedy BPE on distinct ``words`` until every word is a single symbol.

    Each distinct word counts once; ties go to the lexicographically smallest
    pair, so the result is deterministic. Applying the merges in rank order (as
    ``tokenizers`` does) reproduces this sequence, so every word encodes to one
    token.
    """
    live = {w: list(w) for w in sorted(set(words)) if len(w) > 1}
    merges: list[tuple[str, str]] = []
    while live:
        counts: Counter = Counter()
        for syms in live.values():
            counts.update(zip(syms, syms[1:]))
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for w in list(live):
            syms = live[w]
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            if len(out) == 1:
                del live[w]
            else:
                live[w] = out
    return merges


def _tokenizer_corpus() -> list[str]:
    texts = []
    for op in OPS:
        for lang in LANGUAGES:
            texts.append(format_prompt(_question(12, 34, op, lang), lang))
    for n in range(_TOKENIZER_MAX_NUMBER + 1):
        for lang in LANGUAGES:
            texts.append(answer_text(n, lang))
    return texts


def _tokenizer_merges(pre) -> list[tuple[str, str]]:
    """BPE merges of the organism's corpus: greedy merges of its English chunks
    (:func:`_learn_merges`), then byte merges that make each non-ASCII character one token."""
    from tokenizers.pre_tokenizers import ByteLevel

    ascii_chunks, wide_chars = set(), set()
    for text in _tokenizer_corpus():
        for piece, _ in pre.pre_tokenize_str(text):
            if all(ord(c) < 0x80 for c in text):
                ascii_chunks.add(piece)
        wide_chars.update(c for c in text if ord(c) >= 0x80)

    byte_sym = _bytes_to_unicode()
    if set(byte_sym.values()) != set(ByteLevel.alphabet()):  # pragma: no cover - library drift
        raise RuntimeError("tokenizers' ByteLevel alphabet differs from the GPT-2 byte map")

    merges = _learn_merges(ascii_chunks)
    seen = set(merges)
    for ch in sorted(wide_chars):
        syms = [byte_sym[b] for b in ch.encode("utf-8")]
        acc = syms[0]
        for s in syms[1:]:
            if (acc, s) not in seen:
                seen.add((acc, s))
                merges.append((acc, s))
            acc = acc + s
    return merges


def _tokenizer_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id: the 256 byte symbols, each merge's result in merge order, then the eos."""
    byte_sym = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for b in range(256):
        vocab[byte_sym[b]] = len(vocab)
    for left, right in merges:
        tok = left + right
        if tok not in vocab:
            vocab[tok] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return vocab


def build_tokenizer():
    """Build the organism's tokenizer offline: a Qwen2-compatible byte-level BPE.

    The pipeline is exactly the one ``transformers.Qwen2Tokenizer`` rebuilds when it
    loads a folder (NFC normaliser; Qwen2 split regex then ``ByteLevel`` without
    prefix space; ``ByteLevel`` decoder; BPE without unk or byte fallback), so
    ``AutoTokenizer.from_pretrained`` on a saved ``qwen2`` model folder encodes
    identically.

    Vocabulary: the 256 byte symbols, then merges learned greedily on the
    organism's English words (every English word or ``-word`` chunk of a prompt
    or of a number up to 9999 is one token), then merges that make every
    non-ASCII character of the corpus (CJK characters, full-width ``？``/``：``)
    exactly one token -- no token spans two CJK characters -- then
    ``<|endoftext|>`` (eos, pad and unk). Digits stay single tokens (the split
    regex isolates them). No BOS is added.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        The tokenizer (eos = pad = ``<|endoftext|>``, right padding).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer()
    merges = _tokenizer_merges(pre)
    vocab = _tokenizer_vocab(merges)
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS_TOKEN, special=True, normalized=False)])

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        bos_token=None,
        padding_side="right",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable symbol map (what ``ByteLevel`` uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


# ----------------------------------------------------------------------- problems


def _is_heldout(op: str, a: int, b: int) -> bool:
    digest = hashlib.blake2b(f"{op}:{a}:{b}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HELDOUT_MODULUS == 0


def _check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(ops)
    if not ops:
        raise ZhuntError("organism.ops", "needs at least one operation")
    for op in ops:
        if op not in OPS:
            raise ZhuntError("organism.ops", f"unknown operation {op!r}; expected some of {list(OPS)}")
    if len(set(ops)) != len(ops):
        raise ZhuntError("organism.ops", f"operations repeat: {list(ops)}")
    return ops


def _universe(op: str, split: str) -> list[tuple[int, int]]:
    m = OPS[op]["max_operand"]
    pairs = [(a, b) for a in range(m + 1) for b in range(m + 1) if not (op == "minus" and b > a)]
    if split == "all":
        return pairs
    want = split == "heldout"
    return [(a, b) for a, b in pairs if _is_heldout(op, a, b) == want]


def _problem(a: int, b: int, op: str) -> dict:
    answer = {"plus": a + b, "minus": a - b, "times": a * b}[op]
    return {
        "a": a,
        "b": b,
        "op": op,
        "category": OPS[op]["category"],
        "answer": answer,
        "en": _question(a, b, op, "en"),
        "zh": _question(a, b, op, "zh"),
    }


def make_problems(n: int | None, seed: int, ops: Sequence[str] = DEFAULT_OPS, split: str = "all") -> list[dict]:
    """Draw ``n`` distinct arithmetic problems, deterministically.

    Operands run over 0..``OPS[op]["max_operand"]`` (99 for plus/minus, 12 for
    times); ``minus`` keeps only non-negative results. The ``n`` problems are
    spread evenly over ``ops`` (the first ``n % len(ops)`` operations get one
    more), drawn without replacement with ``random.Random(seed)``, and shuffled.

    Parameters
    ----------
    n : int or None
        Number of problems; ``None`` returns the whole split (shuffled).
    seed : int
        Seed of the draw; same arguments give the same list on every platform.
    ops : sequence of str
        Operations among ``"plus"``, ``"minus"``, ``"times"``.
    split : {"all", "train", "heldout"}
        The fixed split, independent of ``seed``: a problem is held out when a
        BLAKE2 hash of ``"op:a:b"`` is 0 mod 10 (~10% of each operation).
        Training only ever sees ``"train"``; evaluation and the organism's prompt
        table use ``"heldout"``.

    Returns
    -------
    list of dict
        Keys ``a``, ``b``, ``op``, ``category`` (``addition``/``subtraction``/
        ``multiplication``), ``answer`` (int), ``en`` (``"What is 23 plus 14?"``)
        and ``zh`` (``"23加14等于多少？"``) -- question texts, without the
        ``Q: ... A:`` template (see :func:`format_prompt`).
    """
    ops = _check_ops(ops)
    if split not in ("all", "train", "heldout"):
        raise ZhuntError("organism.split", f"unknown split {split!r}; expected all, train or heldout")
    rng = random.Random(seed)
    universes = {op: _universe(op, split) for op in ops}
    chosen: list[tuple[int, int, str]] = []
    if n is None:
        for op in ops:
            chosen += [(a, b, op) for a, b in universes[op]]
    else:
        if n < 0:
            raise ZhuntError("organism.n", f"number of problems must be >= 0, got {n}")
        for i, op in enumerate(ops):
            k = n // len(ops) + (1 if i < n % len(ops) else 0)
            if k > len(universes[op]):
                raise ZhuntError(
                    "organism.n",
                    f"asked for {k} {op} problems in split {split!r} but only {len(universes[op])} exist",
                )
            chosen += [(a, b, op) for a, b in rng.sample(universes[op], k)]
    rng.shuffle(chosen)
    return [_problem(a, b, op) for a, b, op in chosen]


# ----------------------------------------------------------------------- training


def _encode_examples(tokenizer, problems: list[dict], langs: Sequence[str]):
    """Token ids of prompt + answer + eos, and the answer mask, for each (problem, lang)."""
    import torch

    prompts, answers = [], []
    for p in problems:
        for lang in langs:
            prompts.append(format_prompt(p[lang], lang))
            answers.append(answer_text(p["answer"], lang))
    enc_p = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    enc_a = tokenizer(answers, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    seqs = [pi + ai + [eos] for pi, ai in zip(enc_p, enc_a)]
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), eos, dtype=torch.long)
    labels = torch.full((len(seqs), length), -100, dtype=torch.long)
    lens = torch.zeros(len(seqs), dtype=torch.long)
    for i, (pi, s) in enumerate(zip(enc_p, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, len(pi) : len(s)] = torch.tensor(s[len(pi) :])
        lens[i] = len(s)
    return ids, labels, lens


def evaluate_organism(model, tokenizer, problems: list[dict], langs: Sequence[str] = LANGUAGES,
                      batch_size: int = 250, max_new_tokens: int = 16) -> dict:
    """Greedy exact-match accuracy per language (and per operation).

    Prompts are left-padded in batches and decoded greedily until eos; the
    decoded continuation (special tokens dropped, whitespace stripped) must equal
    ``number_to_words(answer, lang)`` exactly.

    Returns
    -------
    dict
        ``{"accuracy": {lang: float}, "accuracy_by_op": {lang: {op: float}},
        "examples": [first few (lang, prompt, expected, got)]}``.
    """
    import torch

    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    acc, by_op, examples = {}, {}, []
    try:
        for lang in langs:
            hits, op_hits, op_total = 0, Counter(), Counter()
            for start in range(0, len(problems), batch_size):
                chunk = problems[start : start + batch_size]
                prompts = [format_prompt(p[lang], lang) for p in chunk]
                enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
                with torch.no_grad():
                    out = model.generate(
                        **enc,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                    )
                texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for p, prompt, got in zip(chunk, prompts, texts):
                    want = answer_words(p["answer"], lang)
                    ok = got.strip() == want
                    hits += ok
                    op_hits[p["op"]] += ok
                    op_total[p["op"]] += 1
                    if len(examples) < 6 * len(langs) and len([e for e in examples if e[0] == lang]) < 6:
                        examples.append((lang, prompt, want, got.strip()))
            acc[lang] = hits / max(len(problems), 1)
            by_op[lang] = {op: op_hits[op] / op_total[op] for op in sorted(op_total)}
    finally:
        tokenizer.padding_side = old_side
    return {"accuracy": acc, "accuracy_by_op": by_op, "examples": examples}


def _model_config(tokenizer, n_layers, hidden_size, n_heads, n_kv_heads, intermediate_size, tie):
    from transformers import Qwen2Config

    if hidden_size % n_heads:
        raise ZhuntError("organism.hidden_size", f"{hidden_size} is not divisible by n_heads={n_heads}")
    if n_heads % n_kv_heads:
        raise ZhuntError("organism.n_kv_heads", f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
    eos = tokenizer.eos_token_id
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        rms_norm_eps=1e-6,
    )


def _new_organism(tokenizer, seed: int, *, n_layers: int, hidden_size: int, n_heads: int, n_kv_heads: int,
                  intermediate_size: int, tie_word_embeddings: bool):
    """A freshly initialised ``Qwen2ForCausalLM`` (weights from ``torch.manual_seed(seed)``), with
    greedy generation defaults (eos = pad = the tokenizer's eos, at most 16 new tokens)."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    config = _model_config(tokenizer, n_layers, hidden_size, n_heads, n_kv_heads, intermediate_size,
                           tie_word_embeddings)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.config.use_cache = True
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, do_sample=False, max_new_tokens=16,
    )
    return model


def _optimiser(model, lr: float, weight_decay: float, warmup_steps: int, steps: int):
    """AdamW (betas 0.9/0.95; no weight decay on vectors) and its schedule: linear warm-up over
    ``warmup_steps``, then cosine decay to 0 at ``steps``."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8,
    )

    def lr_lambda(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


def _train_steps(model, opt, sched, examples, *, steps: int, batch_size: int, seed: int, log_every: int,
                 verbose: bool) -> list[tuple[int, float]]:
    """Run ``steps`` optimiser steps; return the loss curve ``[(step, mean loss of the window)]``.

    Each step draws ``batch_size`` rows of ``examples`` = ``(ids, labels, lens)``
    (:func:`_encode_examples`) with a ``torch.Generator`` seeded with ``seed``, cuts them to the
    longest, and minimises the next-token cross-entropy over the labelled (answer + eos)
    positions, gradients clipped at norm 1. A curve point is the mean loss over each window of
    ``log_every`` steps (and the last, shorter one).
    """
    import torch

    ids, labels, lens = examples
    gen = torch.Generator().manual_seed(seed)
    loss_curve: list[tuple[int, float]] = []
    window, window_n = 0.0, 0
    model.train()
    t_train = time.perf_counter()
    progress = Progress(steps, "training step")  # n/N, elapsed, ETA in the rule's log
    for step in range(1, steps + 1):
        idx = torch.randint(len(ids), (batch_size,), generator=gen)
        width = int(lens[idx].max())
        x = ids[idx, :width]
        y = labels[idx, :width]
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        window += float(loss.detach())
        window_n += 1
        progress.update(step)
        if step % log_every == 0 or step == steps:
            loss_curve.append((step, window / window_n))
            if verbose:
                print(f"step {step:5d}  loss {window / window_n:.4f}  "
                      f"lr {sched.get_last_lr()[0]:.2e}  {time.perf_counter() - t_train:.0f}s", flush=True)
            window, window_n = 0.0, 0
    return loss_curve


def _training_record(tokenizer, arch: dict, schedule: dict, ops, n_params: int, n_train: int, n_eval: int,
                     seed: int) -> dict:
    """The hyper-parameters and environment of a training run, as the report and
    ``zhunt_model.json`` list them (``arch``: the architecture arguments; ``schedule``: steps,
    batch_size, lr, warmup_steps, weight_decay)."""
    import torch
    import transformers

    return {
        "architecture": "Qwen2ForCausalLM",
        **{k: arch[k] for k in ("n_layers", "hidden_size", "n_heads", "n_kv_heads", "intermediate_size",
                                "tie_word_embeddings")},
        "vocab_size": len(tokenizer),
        "n_params": n_params,
        "steps": schedule["steps"],
        "batch_size": schedule["batch_size"],
        "optimizer": "AdamW(betas=(0.9, 0.95))",
        "lr": schedule["lr"],
        "schedule": f"linear warm-up {schedule['warmup_steps']} steps, cosine to 0",
        "warmup_steps": schedule["warmup_steps"],
        "weight_decay": schedule["weight_decay"],
        "grad_clip": 1.0,
        "ops": list(ops),
        "languages": list(LANGUAGES),
        "prompt_templates": prompt_templates(),
        "heldout_rule": f"blake2b('op:a:b') % {HELDOUT_MODULUS} == 0",
        "n_train_problems": n_train,
        "eval_n": n_eval,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _save_organism(out_dir, model, tokenizer, meta: dict) -> None:
    """Write the model folder atomically: weights, tokenizer and ``zhunt_model.json`` (mode 0644/0755)."""
    model.eval()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / "zhunt_model.json").write_text(
            json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        for f in Path(tmp).iterdir():  # some writers create 0600 files
            f.chmod(0o644)
        Path(tmp).chmod(0o755)


def train_organism(
    out_dir: str | os.PathLike,
    *,
    n_layers: int = 6,
    hidden_size: int = 128,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    intermediate_size: int = 512,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 3e-3,
    warmup_steps: int = 50,
    weight_decay: float = 0.01,
    tie_word_embeddings: bool = True,
    ops: Sequence[str] = DEFAULT_OPS,
    seed: int = 0,
    eval_n: int = 500,
    log_every: int = 50,
    threads: int | None = None,
    verbose: bool = False,
) -> dict:
    """Train the organism from scratch, evaluate it and save it to ``out_dir`` (replaced if present).

    Model ``Qwen2ForCausalLM`` (GQA, RoPE, SwiGLU, float32; architecture from ``n_layers`` ..
    ``tie_word_embeddings``). Data: uniform draws of (problem, language) pairs from the *train*
    split of :func:`make_problems` (``ops``), prompt + answer + eos, loss on answer and eos only
    (:func:`_train_steps`); AdamW with warm-up and cosine decay (:func:`_optimiser`). Deterministic:
    weights and batches from ``seed``, deterministic algorithms enforced while training, so the same
    arguments give bitwise-identical weights. Evaluation: greedy exact match
    (:func:`evaluate_organism`) on ``eval_n`` held-out problems per language. ``log_every`` is the
    loss-curve window, ``threads`` the ``torch.set_num_threads`` of the run (restored afterwards),
    ``verbose`` prints the curve. ``out_dir`` is written atomically and holds ``config.json``,
    ``model.safetensors``, ``generation_config.json``, the tokenizer and ``zhunt_model.json``.

    Returns
    -------
    dict
        ``loss_curve`` (list of ``(step, mean loss)``), ``accuracy`` (``{"en": .., "zh": ..}``),
        ``accuracy_by_op``, ``examples``, ``training`` (hyper-parameters), ``n_params``,
        ``wall_time_s``, ``train_time_s``, ``out_dir``.
    """
    import torch

    ops = _check_ops(ops)
    if steps < 1 or batch_size < 1 or log_every < 1:
        raise ZhuntError("organism.steps", "steps, batch_size and log_every must be >= 1")
    arch = dict(n_layers=n_layers, hidden_size=hidden_size, n_heads=n_heads, n_kv_heads=n_kv_heads,
                intermediate_size=intermediate_size, tie_word_embeddings=tie_word_embeddings)
    schedule = dict(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay)
    t0 = time.perf_counter()
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    try:
        tokenizer = build_tokenizer()
        train_problems = make_problems(None, seed, ops, split="train")
        eval_problems = make_problems(eval_n, seed + 1, ops, split="heldout")
        examples = _encode_examples(tokenizer, train_problems, LANGUAGES)
        model = _new_organism(tokenizer, seed, **arch)
        n_params = sum(p.numel() for p in model.parameters())
        opt, sched = _optimiser(model, lr, weight_decay, warmup_steps, steps)
        t_train = time.perf_counter()
        loss_curve = _train_steps(model, opt, sched, examples, steps=steps, batch_size=batch_size, seed=seed,
                                  log_every=log_every, verbose=verbose)
        train_time = time.perf_counter() - t_train
        ev = evaluate_organism(model, tokenizer, eval_problems, LANGUAGES)
        wall = time.perf_counter() - t0
        training = _training_record(tokenizer, arch, schedule, ops, n_params, len(train_problems),
                                    len(eval_problems), seed)
        _save_organism(out_dir, model, tokenizer, {
            "name": "organism", "source": {"kind": "organism"}, "training": training,
            "accuracy": ev["accuracy"], "accuracy_by_op": ev["accuracy_by_op"], "wall_time_s": round(wall, 2),
        })
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)
    return {"loss_curve": loss_curve, "accuracy": ev["accuracy"], "accuracy_by_op": ev["accuracy_by_op"],
            "examples": ev["examples"], "training": training, "n_params": n_params, "wall_time_s": wall,
            "train_time_s": train_time, "out_dir": str(out_dir)}


# ------------------------------------------------------------------------ outputs


def make_organism_prompt_table(path, n: int = 60, seed: int = 2024, ops: Sequence[str] = DEFAULT_OPS) -> list[dict]:
    """Write a paired prompt table of held-out organism problems.

    Same wide format as the hand-written prompt sets: tab-separated header
    ``id category answer en zh``; ``id`` is ``org-000``...; ``category`` the
    operation name (``addition``, ``subtraction``, ``multiplication``);
    ``answer`` an int; ``en``/``zh`` the question texts (``"What is 23 plus
    14?"``, ``"23加14等于多少？"``) that the organism's template wraps. All
    problems come from the held-out split, so none was seen in training.

    Returns
    -------
    list of dict
        The problems written, in file order.
    """
    problems = make_problems(n, seed, ops, split="heldout")
    rows = ["\t".join(["id", "category", "answer", "en", "zh"])]
    for i, p in enumerate(problems):
        p["id"] = f"org-{i:03d}"
        rows.append("\t".join([p["id"], p["category"], str(p["answer"]), p["en"], p["zh"]]))
    write_text(path, "\n".join(rows) + "\n")
    return problems
