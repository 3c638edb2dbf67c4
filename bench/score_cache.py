"""Benchmark: the prefill-once scorer (prompt + prefix prefilled once, continuations on copies of its KV
cache) against the previous one-row-per-continuation scorer, on an Exp. A cell's patched pass.

Usage::

    git show 5d1118d:src/zhunt/models/generation.py > /tmp/old_generation.py
    python bench/score_cache.py resources/models/smollm2-135m --baseline /tmp/old_generation.py \\
        --prompts resources/prompts/math.tsv --template chat --layer 26 --k 50 --n 32 --repeats 3
    python bench/score_cache.py resources/models/gemma3-270m --baseline /tmp/old_generation.py \\
        --prompts resources/prompts/math.tsv --template completion --layer 15 --k 50 --n 16 --repeats 3

The workload is :func:`zhunt.experiments.patching_cells.score_pairs`'s patched pass (the cell's
step 6): the ``--n`` first problems' prompts in ``--target`` (rendered with ``--template``) are
paired base -> next problem as donor; the clean greedy runs of ``--max-new-tokens`` tokens give each
pair its common prefix, the two first answer tokens and the two continuations
(:class:`zhunt.experiments.patching_cells.PairTargets`); every base is edited at ``--site`` of
``--layer`` along a Haar-random ``--k``-dim subspace (span mode) with the donor's mean site state
as source, prompt and prefix patched (``patch_prefix=True``); the script masks of
:func:`zhunt.experiments.patching_cells.script_groups` are the token groups.

Arms (interleaved, median of ``--repeats``; process CPU and wall time):

* ``new`` -- :func:`zhunt.models.generation.score` of this tree;
* ``old`` -- ``score`` of the ``--baseline`` file (the same function before the change).

Prints ``old / new`` and the agreement of the two: ``first_argmax`` equal, and the largest
``|new - old|`` of ``lp_candidates``, ``lp_groups`` and ``lp_continuations``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved, machine, print_arms  # noqa: E402

from zhunt.data.prompts import load_prompt_table, load_templates, render_prompts, to_long  # noqa: E402
from zhunt.experiments.patching_cells import PairTargets, script_groups  # noqa: E402
from zhunt.models import generation, get_adapter, load_model  # noqa: E402
from zhunt.models.hooks import capture_hidden_states  # noqa: E402
from zhunt.models.site import hidden_index  # noqa: E402
from zhunt.subspace import random_subspace  # noqa: E402


def load_baseline(path):
    """The module at ``path`` (an older zhunt/models/generation.py), sharing this tree's SubspaceEdit."""
    spec = importlib.util.spec_from_file_location("baseline_generation", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["baseline_generation"] = mod
    spec.loader.exec_module(mod)
    mod.SubspaceEdit = generation.SubspaceEdit  # one edit class, vectorised by both
    return mod


def mean_states(model, tok, texts, j, add_special):
    """Mean over non-special tokens of hidden index ``j``, one (d,) tensor per text (setup only)."""
    special = set(tok.all_special_ids or [])
    out = []
    with torch.inference_mode(), capture_hidden_states(get_adapter(model).layers) as hc:
        for t in texts:
            ids = tok([t], add_special_tokens=add_special)["input_ids"][0]
            hc.clear()
            model(input_ids=torch.tensor([ids]))
            keep = torch.tensor([i not in special for i in ids])
            out.append(hc.hidden[j][0][0, keep].float().mean(0))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--baseline", required=True, help="the previous zhunt/models/generation.py")
    ap.add_argument("--prompts", default="resources/prompts/math.tsv")
    ap.add_argument("--templates", default="resources/prompts/templates.yaml")
    ap.add_argument("--template", default="chat")
    ap.add_argument("--target", default="en")
    ap.add_argument("--other", default="zh")
    ap.add_argument("--layer", type=int, default=26)
    ap.add_argument("--site", default="input")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="8 prompts, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeats = 8, 1
    torch.set_num_threads(args.threads)
    old = load_baseline(args.baseline)

    model, tok = load_model(args.model_dir)
    templates = load_templates(args.templates)
    add_special = templates["families"][args.template]["kind"] != "chat"
    long = to_long(load_prompt_table(args.prompts, languages=[args.target]).head(args.n), [args.target])
    texts = list(render_prompts(long, args.template, templates, tokenizer=tok))
    clean = generation.generate(model, tok, texts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                add_special_tokens=add_special)
    pairs = [(i, (i + 1) % len(texts)) for i in range(len(texts))]
    targets = PairTargets.of(dict(enumerate(clean)), pairs)
    d = model.config.hidden_size
    V = torch.from_numpy(random_subspace(args.k, d, random_state=0).astype(np.float32))
    src = mean_states(model, tok, texts, hidden_index(args.layer, args.site), add_special)
    edits = [generation.SubspaceEdit(V, src[dn], "span") for _, dn in pairs]
    groups = script_groups(tok, [args.target, args.other])
    kw = dict(candidates=targets.candidates, continuations=targets.continuations, prefixes=targets.prefix,
              token_groups=groups, layer_module=args.layer, site=args.site, edits=edits, patch_prefix=True,
              batch_size=args.batch_size, add_special_tokens=add_special)
    res = {}
    arms = {name: (lambda name=name, mod=mod: res.__setitem__(name, mod.score(model, tok, texts, **kw)))
            for name, mod in (("new", generation), ("old", old))}
    cpu: dict = {}
    wall = interleaved(arms, args.repeats, warmup=1, cpu=cpu)

    print(f"# bench/score_cache.py  {machine()}")
    pre = [len(p) for p in targets.prefix]
    cl = [len(c) for cs in targets.continuations for c in cs]
    print(f"model={args.model_dir} prompts={len(texts)} layer={args.layer} site={args.site} k={args.k} "
          f"batch={args.batch_size} threads={args.threads} repeats={args.repeats}; prefix length mean "
          f"{np.mean(pre):.1f}, continuation length mean {np.mean(cl):.1f} (2 per prompt)")
    med_c, med_w = print_arms(wall, cpu, 4)
    print(f"old / new = {med_c['old'] / med_c['new']:.2f}x CPU, {med_w['old'] / med_w['new']:.2f}x wall")
    a, b = res["old"], res["new"]
    diffs = {}
    for key in ("lp_candidates", "lp_groups", "lp_continuations"):
        fin = np.isfinite(a[key])
        assert np.array_equal(fin, np.isfinite(b[key]))
        diffs[key] = float(np.abs(a[key][fin] - b[key][fin]).max()) if fin.any() else 0.0
    print(f"first_argmax equal: {np.array_equal(a['first_argmax'], b['first_argmax'])}; max |new - old|: "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
