"""Shared test fixtures: small offline tokenizers for tiny random-init models, the tiny organism
(trained once per session) and the tiny workflow run shared by the end-to-end tests (run once per
session)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def make_bpe_tokenizer():
    """Factory of byte-level BPE tokenizers trained offline on a given corpus (no pad token)."""

    def build(corpus, vocab_size=300, eos="<eos>"):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eos],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tk.train_from_iterator(corpus, trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=eos)

    return build


#: The tiny organism of the unit tests: 12 steps, 2 layers, d 32 (about 5 s to train).
TINY_ORGANISM = dict(n_layers=2, hidden_size=32, n_heads=4, n_kv_heads=2, intermediate_size=64, steps=12,
                     batch_size=16, lr=3e-3, warmup_steps=2, eval_n=4, log_every=4, seed=7)


@pytest.fixture(scope="session")
def tiny_organism(tmp_path_factory):
    """``(folder, report, params)``: the tiny organism trained once per session with ``params``
    (:data:`TINY_ORGANISM`, one thread) and its training report. Read-only: tests that need files
    beside it link the folder into their own directory."""
    from zhunt.models.organism import train_organism

    folder = tmp_path_factory.mktemp("organism") / "model"
    report = train_organism(folder, threads=1, **TINY_ORGANISM)
    return folder, report, dict(TINY_ORGANISM)


@pytest.fixture(scope="session")
def make_qwen2():
    """Factory ``(n_layers, hidden_size, intermediate_size, seed=0, **config) -> model``: a random-init
    ``Qwen2ForCausalLM`` in eval mode, 4 query / 2 key-value heads, weights from
    ``torch.manual_seed(seed)``; by default vocabulary 100 with ids 0/1/2 = pad/bos/eos (those of
    :func:`tok`); ``config`` overrides any ``Qwen2Config`` argument."""

    def build(n_layers, hidden_size, intermediate_size, seed=0, **config):
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        args = dict(vocab_size=100, hidden_size=hidden_size, num_hidden_layers=n_layers, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=intermediate_size, pad_token_id=0, bos_token_id=1,
                    eos_token_id=2)
        args.update(config)
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(Qwen2Config(**args)).eval()

    return build


@pytest.fixture(scope="session")
def make_tiny_qwen2_folder(tmp_path_factory, make_bpe_tokenizer, make_qwen2):
    """Factory ``(n_layers, seed) -> (folder, model)``: a random-init Qwen2 (d 32, GQA 4/2, d_head 8)
    saved as a prepared zhunt folder (config + safetensors + tokenizer + zhunt_model.json), so that
    :func:`zhunt.models.load_model` accepts it."""

    def build(n_layers, seed):
        from zhunt.io import write_json
        from zhunt.models import PROVENANCE_FILE

        tok = make_bpe_tokenizer(["What is 2 plus 3? five", "二加三等于五"] * 10, vocab_size=280)
        model = make_qwen2(n_layers, 32, 48, seed, vocab_size=len(tok), max_position_embeddings=64,
                           eos_token_id=tok.eos_token_id, bos_token_id=None, pad_token_id=None)
        folder = tmp_path_factory.mktemp("models") / "tiny-qwen2"
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        write_json(folder / PROVENANCE_FILE, {"name": "tiny-qwen2", "architecture": "qwen2"})
        return folder, model

    return build


@pytest.fixture(scope="module")
def tok():
    """Character-level tokenizer with <pad>/<bos>/<eos>, BOS prepended, left padding."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789 ?:.,":
        vocab[c] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="left")


# --------------------------------------------------------------------------- workflow runs
# The tiny DAG (tests/tiny/config.yaml) is run once per session in `tiny_workdir` and shared by
# every end-to-end test. It is read-only by contract: a test that reruns, edits or corrupts
# anything works on its own `clone_tiny(...)` copy.

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = "tests/tiny/config.yaml"
WORKFLOW_ITEMS = ("Snakefile", "config.yaml", "workflow", "profiles", "resources", "envs", "tests/tiny")


def copy_workflow_to(dst) -> Path:
    """Copy the workflow sources (no models, results, logs or Snakemake metadata) into ``dst``."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for item in WORKFLOW_ITEMS:
        src, out = ROOT / item, dst / item
        if src.is_dir():
            shutil.copytree(src, out, ignore=shutil.ignore_patterns("models", "__pycache__"))
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, out)
    return dst


def run_snakemake(workdir, *args, configfiles=(TINY_CONFIG,), cores=2, timeout=900, env=None):
    """``snakemake --cores N ARGS --configfile CONFIGFILES`` in ``workdir`` (captured, text)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), *map(str, args),
           "--configfile", *map(str, configfiles)]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


@pytest.fixture(scope="session")
def copy_workflow():
    """Factory ``copy_workflow(dst) -> dst``: a fresh copy of the workflow sources."""
    return copy_workflow_to


@pytest.fixture(scope="session")
def snakemake_cli():
    """``run_snakemake(workdir, *args, configfiles=..., cores=2, timeout=900, env=None)``."""
    return run_snakemake


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory):
    """A workflow copy on which the whole tiny DAG has run once (read-only: see clone_tiny).

    ``tiny_run_seconds`` (a file in it) holds the wall time of that run.
    """
    wd = copy_workflow_to(tmp_path_factory.mktemp("tiny") / "wd")
    t0 = time.perf_counter()
    res = run_snakemake(wd)
    assert res.returncode == 0, res.stderr[-4000:]
    (wd / "tiny_run_seconds").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return wd


@pytest.fixture(scope="session")
def clone_tiny(tiny_workdir):
    """Factory ``clone_tiny(dst) -> dst``: a full copy of ``tiny_workdir`` (outputs, model,
    logs and Snakemake metadata, mtimes kept), so Snakemake sees it as up to date."""

    def clone(dst):
        return Path(shutil.copytree(tiny_workdir, dst, symlinks=True))

    return clone


