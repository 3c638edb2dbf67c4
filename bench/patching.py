"""Benchmark: batched patched generation vs unpatched batched generation vs a per-problem loop.

Usage::

    python bench/patching.py /tmp/zhunt-organism --prompts /tmp/zhunt-organism-report/organism.tsv \\
        --store /tmp/org-store/organism.h5 --mask /tmp/org-store/masks/L3.h5 --layer 3 --k 16 \\
        --batch-sizes 16,64 --repeats 5

Same English prompts in all three arms (median of ``--repeats``, interleaved so
load drift hits them alike):

* ``unpatched`` — :func:`zhunt.generation.generate`, batched, no edits;
* ``patched``   — the same call with one edit per prompt, cycling through the
  Exp. A conditions (Z, Z⊥, full, random-subspace Z) with the mean Chinese
  source of the problem read from the activation store, so one batch mixes
  bases and modes (the vectorised per-row path);
* ``loop``      — the same patched edits, one problem at a time (``batch_size=1``).

Prints, per batch size, ``patched / unpatched`` (goal <= 1.25x) and ``loop / patched``
(goal >= 5x),
and the generated-token and forward-pass counts: a batch runs until its longest row
stops, and a patch that makes some rows run longer adds decode steps, so the ratio
per forward pass (the cost of the hooks themselves) is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from zhunt.generation import SubspaceEdit, generate
from zhunt.masks import read_mask
from zhunt.models import load_model
from zhunt.patching import mean_source, random_bases
from zhunt.prompts import load_prompt_table, load_templates, render_prompts, to_long
from zhunt.store import ActivationStore


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--prompts", default="/tmp/zhunt-organism-report/organism.tsv")
    ap.add_argument("--store", default="/tmp/org-store/organism.h5")
    ap.add_argument("--mask", default="/tmp/org-store/masks/L3.h5")
    ap.add_argument("--template", default="organism")
    ap.add_argument("--templates", default="resources/prompts/templates.yaml")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-sizes", default="16,64", help="comma-separated batch sizes of the batched arms")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    table = load_prompt_table(args.prompts, languages=["en", "zh"])
    long = to_long(table, ["en"])
    model, tok = load_model(args.model_dir, device="cpu")
    texts = render_prompts(long, args.template, load_templates(args.templates), tokenizer=tok)
    V = torch.as_tensor(read_mask(args.mask, "multihead", args.k).astype(np.float32))
    R = torch.as_tensor(random_bases(args.k, V.shape[1], 1, 0)[0].astype(np.float32))
    with ActivationStore(args.store) as st:
        src = [mean_source(st.tokens(p, "zh", args.layer + 1)[~st.token_mask(p, "zh")]) for p in table["id"]]
    kinds = [(V, "span"), (V, "complement"), (None, "full"), (R, "span")]
    edits = [SubspaceEdit(kinds[i % 4][0], torch.as_tensor(s, dtype=torch.float32), kinds[i % 4][1])
             for i, s in enumerate(src)]
    kw = dict(max_new_tokens=args.max_new_tokens)

    sizes = [int(x) for x in args.batch_sizes.split(",")]
    arms = {}
    for bs in sizes:
        arms[f"unpatched/{bs}"] = lambda bs=bs: generate(model, tok, texts, batch_size=bs, **kw)
        arms[f"patched/{bs}"] = lambda bs=bs: generate(model, tok, texts, batch_size=bs, layer_module=args.layer,
                                                       edits=edits, **kw)
    arms["loop"] = lambda: generate(model, tok, texts, batch_size=1, layer_module=args.layer, edits=edits, **kw)
    timings = {k: [] for k in arms}
    n_tok, n_fwd = {}, {}
    first = model.model.layers[0]
    for name, fn in arms.items():  # warm-up; generated tokens and forward passes (prefill + decode steps)
        calls = []
        hd = first.register_forward_hook(lambda *a: calls.append(1))
        try:
            n_tok[name] = sum(r["n_new_tokens"] for r in fn())
        finally:
            hd.remove()
        n_fwd[name] = len(calls)
    for _ in range(args.repeats):
        for name, fn in arms.items():
            t0 = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in timings.items()}
    print(f"model={args.model_dir} prompts={len(texts)} layer={args.layer} k={args.k} batch sizes={sizes} "
          f"max_new_tokens={args.max_new_tokens} threads={args.threads} repeats={args.repeats}")
    for name in arms:
        print(f"  {name:12s} median {med[name]:.3f}s  (all: {', '.join(f'{t:.3f}' for t in timings[name])})  "
              f"generated tokens {n_tok[name]}, forward passes {n_fwd[name]}")
    for bs in sizes:
        p, u = f"patched/{bs}", f"unpatched/{bs}"
        r1 = med[p] / med[u]
        r1_fwd = (med[p] / n_fwd[p]) / (med[u] / n_fwd[u])
        print(f"batch {bs}: patched / unpatched = {r1:.2f}x (per forward pass {r1_fwd:.2f}x; goal <= 1.25x); "
              f"loop / patched = {med['loop'] / med[p]:.2f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
