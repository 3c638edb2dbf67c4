"""Benchmark: activation extraction vs a bare forward pass, side by side in one run.

Usage::

    python bench/extraction.py resources/models/gemma3-270m --n 60 --repeats 5

Times, on the same prompts and batches (median of ``--repeats``):

* ``bare``      — ``model(**batch)`` only (logits of the last position);
* ``hidden``    — ``model(**batch, output_hidden_states=True)``, tensors kept;
* ``extract``   — :func:`zhunt.extraction.extract_to_store` writing the full
  HDF5 store to a temporary directory (tokenisation, hooks, host copies, I/O).

and prints ``extract / bare`` and ``extract / hidden`` ratios (goal <= 1.15x
against the hidden-states forward).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from zhunt.extraction import extract_to_store, left_pad, tokenize_prompts
from zhunt.models import get_adapter, load_model
from zhunt.prompts import load_prompt_table, load_templates, render_prompts, to_long


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--prompts", default="resources/prompts/math.tsv")
    ap.add_argument("--template", default="completion")
    ap.add_argument("--langs", default="en,zh")
    ap.add_argument("--n", type=int, default=60, help="number of prompts")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    langs = args.langs.split(",")
    long = to_long(load_prompt_table(args.prompts, languages=langs), langs)
    model, tok = load_model(args.model_dir)
    long = long.assign(text=render_prompts(long, args.template, load_templates("resources/prompts/templates.yaml"),
                                           tokenizer=tok)).head(args.n)
    layers = get_adapter(model).layers

    # the same length-sorted batches extract_to_store forms
    ids = tokenize_prompts(tok, list(long["text"]))
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = [left_pad([ids[i] for i in order[s:s + args.batch_size]], tok.pad_token_id)
               for s in range(0, len(order), args.batch_size)]

    def bare(hidden: bool):
        with torch.inference_mode():
            for input_ids, mask, pos in batches:
                out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos,
                            output_hidden_states=hidden, logits_to_keep=1)
                if hidden:
                    [h.float().cpu() for h in out.hidden_states]

    def extract():
        with tempfile.TemporaryDirectory() as tmp:
            extract_to_store(model, tok, layers, long, Path(tmp) / "x.h5", batch_size=args.batch_size)

    timings = {"bare": [], "hidden": [], "extract": []}
    bare(False)  # warm-up
    for _ in range(args.repeats):  # interleaved, so drift hits all three alike
        for name, fn in (("bare", lambda: bare(False)), ("hidden", lambda: bare(True)), ("extract", extract)):
            t0 = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in timings.items()}
    n_tok = sum(len(x) for x in ids)
    print(f"model={args.model_dir} prompts={len(long)} tokens={n_tok} batch={args.batch_size} "
          f"threads={args.threads} repeats={args.repeats}")
    for k, v in med.items():
        print(f"  {k:8s} median {v:8.3f} s   ({n_tok / v:8.0f} tok/s)")
    print(f"  ratio extract/bare   = {med['extract'] / med['bare']:.3f}")
    print(f"  ratio extract/hidden = {med['extract'] / med['hidden']:.3f}   (goal <= 1.15)")


if __name__ == "__main__":
    main()
