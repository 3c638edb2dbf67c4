"""Probe: how much of the first answer position the unpatched common prefix carries from the base prompt.

Usage::

    python bench/patching_prefix_probe.py resources/models/gemma3-270m results/gemma3-270m/activations/math.h5 \\
        --prompts resources/prompts/math.tsv --template completion --layer 15 --n-problems 40

On the template-aligned same-language pairs (``input_L{layer}_k1_aligned_en-from-en_donor``, its
pairs among the first ``--n-problems`` problems) the full interchange replaces every prompt state
at the input of ``layer`` by the donor's. Printed: its IIA read at the first generated token and
at the first token where the two clean runs diverge (the common prefix teacher-forced and not
patched, as :func:`zhunt.experiments.patching_cells.cell_records` scores it). Where the prefix is empty both are
exact (1); the gap measures what the prefix tokens' own states below the site read from the base
prompt. Not a stage: the cells' records carry ``prefix_len`` for the same split.
"""

import argparse
import time

import numpy as np

from zhunt.models.generation import SubspaceEdit, generate, score
from zhunt.experiments.patching_cells import cell_context, cell_pairs, first_divergence
from zhunt.experiments.patching_design import parse_cell


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("store")
    ap.add_argument("--prompts", default="resources/prompts/math.tsv")
    ap.add_argument("--templates", default="resources/prompts/templates.yaml")
    ap.add_argument("--template", default="completion")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--n-problems", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    t0 = time.perf_counter()
    ctx = cell_context(a.model, a.store, a.prompts, ["en", "zh"], a.templates, a.template, threads=a.threads)
    ctx["problems"] = ctx["problems"][:a.n_problems]
    pairs, _, states = cell_pairs(ctx, parse_cell(f"input_L{a.layer}_k1_aligned_en-from-en_donor"))
    m, tok, ad = ctx["model"], ctx["tokenizer"], ctx["adapter"]
    prompt = lambda p: ctx["prompt_of"][(p, "en")]  # noqa: E731
    ids = sorted({p for pr in pairs for p in pr}, key=ctx["problems"].index)
    runs = generate(m, tok, [prompt(p) for p in ids], max_new_tokens=a.max_new_tokens,
                    add_special_tokens=ctx["add_special"])
    clean = {p: r["token_ids"] for p, r in zip(ids, runs)}
    div = [first_divergence(clean[b], clean[d]) for b, d in pairs]
    keep = [i for i, (_, bt, dt) in enumerate(div) if bt >= 0 and dt >= 0]
    pl = np.array([div[i][0] for i in keep])
    print(f"{len(pairs)} aligned pairs, {len(keep)} diverging; prefix_len {np.bincount(pl).tolist()}")
    edits = [SubspaceEdit(None, states[i][1].astype(np.float32), "full") for i in keep]
    for name, pre in (("first generated token", [[] for _ in keep]),
                      ("first diverging token", [clean[pairs[i][0]][:div[i][0]] for i in keep])):
        sc = score(m, tok, [prompt(pairs[i][0]) for i in keep], prefixes=pre, layer_module=ad.layers[a.layer],
                   site="input", edits=edits, add_special_tokens=ctx["add_special"])
        hit = sc["first_argmax"] == np.array([clean[pairs[i][1]][len(p)] for i, p in zip(keep, pre)])
        print(f"L{a.layer} full interchange, IIA at the {name}: {hit.sum()}/{hit.size} "
              f"(prefix_len > 0: {hit[pl > 0].sum()}/{(pl > 0).sum()})")
    print(f"{time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
