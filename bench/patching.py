"""Benchmark: batched patched generation vs unpatched batched generation vs a per-problem loop.

Usage::

    python bench/patching.py /tmp/zhunt-organism --prompts /tmp/zhunt-organism-report/organism.tsv \\
        --store /tmp/org-store/organism.h5 --mask /tmp/org-store/masks/L3.h5 --layer 3 --k 16 \\
        --batch-sizes 16,64 --repeats 5
    python bench/patching.py /tmp/zhunt-organism --quick
    python bench/patching.py /tmp/zhunt-models/gemma3-270m --prompts resources/prompts/math.tsv \
        --template completion --store results/gemma3-270m/activations/math.h5 \
        --mask results/gemma3-270m/masks/L15.h5 --layer 15 --k 20 --max-new-tokens 8 --n 16 --batch-sizes 16

Same English prompts in all three arms (median of ``--repeats``, interleaved so
load drift hits them alike):

* ``unpatched`` — :func:`zhunt.models.generation.generate`, batched, no edits;
* ``patched``   — the same call with one edit per prompt, cycling through the
  Exp. A conditions (Z, Z⊥, full, random-subspace Z) with the mean Chinese
  source of the problem read from the activation store, so one batch mixes
  bases and modes (the vectorised per-row path);
* ``loop``      — the same patched edits, one problem at a time (``batch_size=1``).

Prints, per batch size, ``patched / unpatched`` (goal <= 1.25x) and ``loop / patched``
(goal >= 5x) — ratios of median process CPU time (robust to other processes on the
cores; with ``--threads 1`` the time an idle core would take) and of median wall time —
and the generated-token and forward-pass counts: a batch runs until its longest row
stops, and a patch that makes some rows run longer adds decode steps, so the ratio
per forward pass (the cost of the hooks themselves) is printed too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved, machine, print_arms  # noqa: E402

from zhunt.models.generation import SubspaceEdit, generate  # noqa: E402
from zhunt.weights.masks import read_mask  # noqa: E402
from zhunt.models import load_model  # noqa: E402
from zhunt.experiments.patching import mean_source, random_bases  # noqa: E402
from zhunt.data.prompts import load_prompt_table, load_templates, render_prompts, to_long  # noqa: E402
from zhunt.data.store import ActivationStore  # noqa: E402


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
    ap.add_argument("--n", type=int, default=None, help="first n problems only (default: all)")
    ap.add_argument("--batch-sizes", default="16,64", help="comma-separated batch sizes of the batched arms")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (generate() returns host results, so each "
                    "timed call ends synchronised)")
    ap.add_argument("--no-loop", action="store_true", help="skip the one-prompt-at-a-time arm (minutes at 100 "
                    "new tokens on a large vocabulary)")
    ap.add_argument("--quick", action="store_true", help="batch size 16 only, 3 repeats")
    args = ap.parse_args()
    if args.quick:
        args.batch_sizes, args.repeats = "16", 3
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    table = load_prompt_table(args.prompts, languages=["en", "zh"])
    if args.n:
        table = table.head(args.n)
    long = to_long(table, ["en"])
    model, tok = load_model(args.model_dir, device=args.device)
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
    if not args.no_loop:
        arms["loop"] = lambda: generate(model, tok, texts, batch_size=1, layer_module=args.layer, edits=edits, **kw)
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
    cpu: dict = {}
    timings = interleaved(arms, args.repeats, warmup=0, cpu=cpu)  # the warm-up above
    print(f"# bench/patching.py  {machine()}")
    print(f"model={args.model_dir} prompts={len(texts)} layer={args.layer} k={args.k} batch sizes={sizes} "
          f"max_new_tokens={args.max_new_tokens} threads={args.threads} repeats={args.repeats}")
    # verdicts on process CPU time (other processes share the cores; with --threads 1 it is the
    # time an idle core would take); median wall times are printed alongside
    med, wmed = print_arms(timings, cpu, 12, lambda a: f"generated tokens {n_tok[a]}, forward passes {n_fwd[a]}")
    for bs in sizes:
        p, u = f"patched/{bs}", f"unpatched/{bs}"
        r1 = med[p] / med[u]
        r1_fwd = (med[p] / n_fwd[p]) / (med[u] / n_fwd[u])
        loop = (f"; loop / patched = {med['loop'] / med[p]:.2f}x CPU, {wmed['loop'] / wmed[p]:.2f}x wall (goal >= 5x)"
                if "loop" in med else "")
        print(f"batch {bs}: patched / unpatched = {r1:.2f}x CPU, {wmed[p] / wmed[u]:.2f}x wall "
              f"(per forward pass {r1_fwd:.2f}x; goal <= 1.25x){loop}")


if __name__ == "__main__":
    main()
