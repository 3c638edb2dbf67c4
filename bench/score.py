"""Benchmark: the batched teacher-forced scorer vs a per-prompt loop, and its agreement with generate.

Usage::

    python bench/score.py resources/models/organism --n 128 --batch-sizes 16,64 --repeats 5
    python bench/score.py resources/models/organism-tiny --quick

Prompts: held-out organism problems in English (``Q: What is 23 plus 14? A:``),
each edited at ``--site`` of ``--layer`` by a span-mode
:class:`~zhunt.models.generation.SubspaceEdit` along a Haar-random ``--k``-dim
subspace with the mean site state of the same problem's Chinese prompt as the
source (the Exp. A mean-source shape). Every arm asks for the same things:
candidates (the base's and the donor's own first answer tokens), two token
groups (CJK vs ASCII-letter tokens) and two continuations (the base's and the
donor's own greedy answers, teacher forced).

* ``score/<bs>`` — :func:`zhunt.models.generation.score`, batched;
* ``loop``       — the same call one prompt at a time (``batch_size=1``).

Prints ``loop / score`` (median process CPU time and wall time, interleaved
repeats), and the agreement of ``score`` with step 0 of
:func:`zhunt.models.generation.generate` under the same edits: the argmax agreement
rate and the largest |log p| difference over the whole vocabulary
(generate's step-0 logits read from an ``lm_head`` hook).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved, machine, print_arms  # noqa: E402

from zhunt.models.generation import SubspaceEdit, generate, score  # noqa: E402
from zhunt.models.hooks import capture_hidden_states  # noqa: E402
from zhunt.models import get_adapter, load_model  # noqa: E402
from zhunt.models.organism import format_prompt, make_problems  # noqa: E402
from zhunt.models.site import hidden_index  # noqa: E402
from zhunt.subspace import random_subspace  # noqa: E402


def mean_site_states(model, tok, texts, j):
    """Mean over non-special tokens of hidden index ``j``, one (d,) tensor per text (unbatched: setup only)."""
    special = set(tok.all_special_ids or [])
    out = []
    with torch.inference_mode(), capture_hidden_states(get_adapter(model).layers) as hc:
        for t in texts:
            ids = tok([t])["input_ids"][0]
            hc.clear()
            model(input_ids=torch.tensor([ids]))
            keep = torch.tensor([i not in special for i in ids])
            out.append(hc.hidden[j][0][0, keep].float().mean(0))
    return out


def step0_logits(model, tok, texts, batch_size, **kw):
    """generate's step-0 logits per text (input order) from an lm_head hook on each batch's prefill."""
    calls = []
    head = model.get_output_embeddings()
    hd = head.register_forward_hook(lambda m, a, o: calls.append(o[:, -1].float().clone()))
    try:
        res = generate(model, tok, texts, max_new_tokens=1, batch_size=batch_size, **kw)
    finally:
        hd.remove()
    ids = [tok([t])["input_ids"][0] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-len(ids[i]), i))
    out = [None] * len(texts)
    for b, s0 in enumerate(range(0, len(texts), batch_size)):
        for r, i in enumerate(order[s0:s0 + batch_size]):
            out[i] = calls[b][r]
    return torch.stack(out), res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?", default="resources/models/organism")
    ap.add_argument("--n", type=int, default=128, help="problems (prompts per arm)")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--site", default="input")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="16 problems, batch size 16, 3 repeats")
    args = ap.parse_args()
    if args.quick:
        args.n, args.batch_sizes, args.repeats = 16, "16", 3
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    model, tok = load_model(args.model_dir, device="cpu")
    problems = make_problems(args.n, 0, split="heldout")
    en = [format_prompt(p["en"], "en") for p in problems]
    zh = [format_prompt(p["zh"], "zh") for p in problems]
    d = model.config.hidden_size
    k = min(args.k, d)
    V = torch.from_numpy(random_subspace(k, d, random_state=0).astype(np.float32))
    src = mean_site_states(model, tok, zh, hidden_index(args.layer, args.site))
    edits = [SubspaceEdit(V, s, "span") for s in src]
    g_en = generate(model, tok, en, max_new_tokens=8, batch_size=64)
    g_zh = generate(model, tok, zh, max_new_tokens=8, batch_size=64)
    cands = [[a["token_ids"][0], b["token_ids"][0]] for a, b in zip(g_en, g_zh)]
    conts = [[a["token_ids"], b["token_ids"]] for a, b in zip(g_en, g_zh)]
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    text_of = [tok.convert_tokens_to_string([t]) for t in vocab]
    groups = np.array([[any("\u4e00" <= c <= "\u9fff" for c in t) for t in text_of],
                       [any(c.isascii() and c.isalpha() for c in t) for t in text_of]])
    kw = dict(candidates=cands, continuations=conts, token_groups=groups, layer_module=args.layer,
              site=args.site, edits=edits)

    sizes = [int(x) for x in args.batch_sizes.split(",")]
    arms = {f"score/{bs}": (lambda bs=bs: score(model, tok, en, batch_size=bs, **kw)) for bs in sizes}
    arms["loop"] = lambda: score(model, tok, en, batch_size=1, **kw)
    cpu: dict = {}
    wall = interleaved(arms, args.repeats, warmup=1, cpu=cpu)

    print(f"# bench/score.py  {machine()}")
    print(f"model={args.model_dir} prompts={len(en)} layer={args.layer} site={args.site} k={k} "
          f"threads={args.threads} repeats={args.repeats} (2 candidates, 2 groups, 2 continuations per prompt)")
    med_c, med_w = print_arms(wall, cpu, 10)
    for bs in sizes:
        s = f"score/{bs}"
        print(f"batch {bs}: loop / score = {med_c['loop'] / med_c[s]:.2f}x CPU, "
              f"{med_w['loop'] / med_w[s]:.2f}x wall")
    # agreement with generate's step 0 under the same edits (both sites checked the same way)
    for bs in sizes:
        ref, gen = step0_logits(model, tok, en, bs, layer_module=args.layer, site=args.site, edits=edits)
        ref_lp = torch.log_softmax(ref, dim=-1).numpy()
        all_cands = [list(range(ref.shape[1]))] * len(en)
        res = score(model, tok, en, batch_size=bs, candidates=all_cands, layer_module=args.layer, site=args.site,
                    edits=edits)
        agree = np.mean(res["first_argmax"] == np.array([r["token_ids"][0] for r in gen]))
        diff = np.abs(res["lp_candidates"] - ref_lp).max()
        print(f"batch {bs}: score vs generate step 0 (same edits): argmax agreement {agree:.4f} "
              f"({len(en)} prompts), max |log p difference| over the vocabulary {diff:.2e}")
    t0 = time.perf_counter()
    score(model, tok, en, batch_size=sizes[-1], **kw)
    print(f"one batched score call (batch {sizes[-1]}): {time.perf_counter() - t0:.3f}s wall")


if __name__ == "__main__":
    main()
