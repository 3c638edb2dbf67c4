"""Benchmark: activation extraction vs a bare HF forward, TransformerLens and nnsight, side by side.

Usage::

    python bench/extraction.py /tmp/zhunt-models/gemma3-270m --n 40 --repeats 5
    python bench/extraction.py /tmp/zhunt-organism --prompts /tmp/zhunt-organism-report/organism.tsv \\
        --template organism --n 60
    python bench/extraction.py MODEL --quick            # 12 prompts, 3 repeats (smoke run)
    # with TransformerLens / nnsight: run with a venv that has them (see BENCHMARKS.md)
    /work/venv-bench/bin/python bench/extraction.py MODEL --arms bare,hidden,extract,nnsight,tlens

Same prompts, same length-sorted left-padded batches, interleaved repeats
(arm order rotated), medians reported. Arms:

* ``bare``     ``model(**batch, logits_to_keep=1)`` (no hidden states);
* ``hidden``   ``model(**batch, output_hidden_states=True, logits_to_keep=1)``:
               the baseline of the goal (batches pre-tokenised, nothing written);
* ``hooks``    the forward under :func:`zhunt.models.hooks.capture_hidden_states` (what
               ``extract`` uses to capture), nothing copied or written: the
               like-for-like counterpart of ``nnsight`` / ``tlens``;
* ``extract``  :func:`zhunt.data.extraction.extract_to_store` end to end: tokenisation,
               hooks, pad removal, float32 host copies, HDF5 write of all
               ``L + 1`` hidden states to a temporary file;
* ``nnsight``  ``nnsight.NNsight(model).trace(**batch)`` saving the input of
               layer 0 and every layer's output (``.save()``), nothing written;
* ``tlens``    TransformerLens 4 ``TransformerBridge.run_with_cache`` (``HookedTransformer``
               was removed in 4.0), booted offline from the model folder, raw weights,
               ``stop_at_layer=L`` so no unembedding, names filtered to the L + 1
               residual-stream hooks, nothing written. The bridge forces eager
               attention (so its hooks can see attention patterns): it runs on its
               own copy of the model.

Before timing, every arm's hidden states are compared with the store written
by ``extract`` (all non-pad tokens, all indices it provides) and the max
absolute / max relative difference is printed. Goals: extract / hidden <= 1.15;
extract faster than nnsight and TransformerLens.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved, machine, medians, spread, verdict  # noqa: E402

from zhunt.data.extraction import extract_to_store  # noqa: E402
from zhunt.models.batching import left_pad, tokenize_prompts  # noqa: E402
from zhunt.models.hooks import capture_hidden_states  # noqa: E402
from zhunt.models import get_adapter, load_model  # noqa: E402
from zhunt.data.prompts import load_prompt_table, load_templates, render_prompts, to_long  # noqa: E402
from zhunt.data.store import ActivationStore  # noqa: E402


def load_prompts(args, tok):
    langs = args.langs.split(",")
    long = to_long(load_prompt_table(args.prompts, languages=langs), langs)
    long = long.assign(text=render_prompts(long, args.template, load_templates(args.templates), tokenizer=tok))
    return long.head(args.n).reset_index(drop=True)


class Batches:
    """The length-sorted, left-padded batches extract_to_store forms, and the way back to prompt order."""

    def __init__(self, tok, texts, batch_size, device="cpu"):
        self.ids = tokenize_prompts(tok, texts)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        order = np.argsort(-np.array([len(s) for s in self.ids]), kind="stable")
        self.groups = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        self.batches = [tuple(t.to(device) for t in left_pad([self.ids[i] for i in g], pad)) for g in self.groups]
        lengths = np.array([len(s) for s in self.ids])
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.n_rows = int(lengths.sum())

    def to_rows(self, per_batch_states, n_states, d):
        """``per_batch_states[b][j]`` (B, T, d) tensors -> ``n_states`` arrays (n_rows, d) in prompt order."""
        out = [np.zeros((self.n_rows, d), np.float32) for _ in range(n_states)]
        for g, (ids, _, _), states in zip(self.groups, self.batches, per_batch_states):
            T = ids.shape[1]
            for j, h in enumerate(states):
                h = h.detach().float().cpu().numpy()
                for r, i in enumerate(g):
                    n = len(self.ids[i])
                    out[j][self.offsets[i]:self.offsets[i] + n] = h[r, T - n:]
        return out


def compare(name, rows, store_rows, indices):
    worst_abs, worst_rel = 0.0, 0.0
    for j in indices:
        a, b = rows[j], store_rows[j]
        diff = np.abs(a - b).max()
        worst_abs = max(worst_abs, float(diff))
        worst_rel = max(worst_rel, float(diff / max(np.abs(b).max(), 1e-30)))
    return f"  {name:8s} vs store: hidden indices {indices[0]}..{indices[-1]}: max |diff| {worst_abs:.2e}, " \
           f"max |diff| / max |h| {worst_rel:.2e}"


def make_nnsight(model, L, batches):
    import nnsight

    nn_model = nnsight.NNsight(model)
    nn_layers = nn_model.model.layers

    def run(keep=False):
        got = []
        with torch.inference_mode():
            for input_ids, mask, pos in batches.batches:
                saved = []  # filled inside the trace (nnsight runs the block's body itself)
                with nn_model.trace(input_ids=input_ids, attention_mask=mask, position_ids=pos,
                                    use_cache=False, logits_to_keep=1):
                    saved.append(nn_layers[0].input.save())
                    for l in range(L):
                        saved.append(nn_layers[l].output.save())
                if keep:
                    got.append([s if isinstance(s, torch.Tensor) else s[0] for s in saved])
        return got

    return run


def make_tlens(model_dir, L, batches, device="cpu"):
    """TransformerLens 4 ``TransformerBridge`` booted from the local folder (no download).

    The bridge forces eager attention on the HF model it wraps, so it gets its
    own copy of the model (the other arms keep transformers' default sdpa).
    Raw HF weights (no weight processing), ``stop_at_layer=L`` (no unembedding).
    """
    from transformer_lens.model_bridge import TransformerBridge

    model, tok = load_model(model_dir, device=device)
    br = TransformerBridge.boot_transformers(str(model_dir), hf_model=model, tokenizer=tok, device=device)
    names = ["blocks.0.hook_in"] + [f"blocks.{l}.hook_out" for l in range(L)]
    wanted = set(names)

    def run(keep=False):
        got = []
        with torch.inference_mode():
            for input_ids, mask, pos in batches.batches:
                _, cache = br.run_with_cache(input_ids, attention_mask=mask, position_ids=pos, use_cache=False,
                                             names_filter=lambda n: n in wanted, stop_at_layer=L)
                if keep:
                    got.append([cache[n] for n in names])
        return got

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--prompts", default="resources/prompts/math.tsv")
    ap.add_argument("--templates", default="resources/prompts/templates.yaml")
    ap.add_argument("--template", default="completion")
    ap.add_argument("--langs", default="en,zh")
    ap.add_argument("--n", type=int, default=40, help="number of prompts (rows of the long table)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (on a GPU, judge by the wall-time ratios: "
                                                     "CPU time then measures the host side only)")
    ap.add_argument("--arms", default="bare,hidden,hooks,extract,nnsight,tlens",
                    help="comma-separated; nnsight/tlens are skipped (with the reason) when they fail to import/load")
    ap.add_argument("--profile", action="store_true",
                    help="also profile --profile-calls extract runs (pyinstrument if installed, else torch.profiler)")
    ap.add_argument("--profile-calls", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="12 prompts, 3 repeats")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeats = min(args.n, 12), 3
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    model, tok = load_model(args.model_dir, device=args.device)
    long = load_prompts(args, tok)
    ad = get_adapter(model)
    L, d = ad.num_layers, ad.hidden_size
    B = Batches(tok, list(long["text"]), args.batch_size, args.device)
    want = args.arms.split(",")
    tmp = tempfile.TemporaryDirectory(prefix="zhunt-bench-")
    store_path = Path(tmp.name) / "x.h5"

    def bare(hidden: bool, keep=False):
        got = []
        with torch.inference_mode():
            for input_ids, mask, pos in B.batches:
                out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False,
                            output_hidden_states=hidden, logits_to_keep=1)
                if keep:
                    got.append(out.hidden_states)
        return got

    def extract():
        extract_to_store(model, tok, ad.layers, long, store_path, batch_size=args.batch_size)

    def hooks():  # the capture extract_to_store uses, without pad removal, copies or writing
        with torch.inference_mode(), capture_hidden_states(ad.layers) as cap:
            for input_ids, mask, pos in B.batches:
                cap.clear()
                model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1)

    arms = {}
    if "bare" in want:
        arms["bare"] = lambda: bare(False)
    if "hidden" in want:
        arms["hidden"] = lambda: bare(True)
    if "hooks" in want:
        arms["hooks"] = hooks
    arms["extract"] = extract
    extract()
    with ActivationStore(store_path, cache_layers=0) as st:
        store_rows = [st.hidden(j) for j in range(L + 1)]
    checks = []
    if "hidden" in want:
        # transformers 5 puts the *final-normed* state at index L, so only 0..L-1 are comparable
        checks.append(compare("hidden", B.to_rows(bare(True, keep=True), L + 1, d), store_rows, list(range(L))))
    notes = []
    if "nnsight" in want:
        try:
            import nnsight

            run = make_nnsight(model, L, B)
            checks.append(compare("nnsight", B.to_rows(run(keep=True), L + 1, d), store_rows, list(range(L + 1))))
            arms["nnsight"] = run
            notes.append(f"nnsight {nnsight.__version__}")
        except Exception as exc:  # noqa: BLE001 - report why and go on
            notes.append(f"nnsight skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    if "tlens" in want:
        try:

            run = make_tlens(args.model_dir, L, B, args.device)
            checks.append(compare("tlens", B.to_rows(run(keep=True), L + 1, d), store_rows, list(range(L + 1))))
            arms["tlens"] = run
            notes.append(f"transformer_lens {importlib.metadata.version('transformer_lens')} (TransformerBridge)")
        except Exception as exc:  # noqa: BLE001
            notes.append(f"tlens skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    if args.device.startswith("cuda"):  # time until the GPU work is done
        arms = {k: (lambda f=f: (f(), torch.cuda.synchronize())) for k, f in arms.items()}
    cpu = {}
    times = interleaved(arms, args.repeats, cpu=cpu)
    med, cmed = medians(times), medians(cpu)
    import transformers

    print(f"# bench/extraction.py  {machine()}")
    print(f"# torch {torch.__version__} threads={args.threads}, transformers {transformers.__version__}"
          + "".join(f"; {n}" for n in notes))
    print(f"model={args.model_dir} (L={L}, d={d}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params) "
          f"prompts={len(long)} tokens={B.n_rows} batch={args.batch_size} batches={len(B.batches)} "
          f"repeats={args.repeats}")
    print("equality (tolerance: max |diff| / max |h| <= 1e-5):")
    for c in checks:
        print(c)
    print(f"{'arm':8s} {'median s':>9s} {'tok/s':>8s}  {'min..max':>13s}  {'CPU s':>8s}")
    for k, v in med.items():
        print(f"{k:8s} {v:9.3f} {B.n_rows / v:8.0f}  {spread(times[k]):>13s}  {cmed[k]:8.3f}")
    mins = {k: min(v) for k, v in times.items()}
    print("ratios: median CPU time (the verdict: other processes share the cores), median wall, min wall")

    def line(a, b, goal=None, kind="<="):
        r = cmed[a] / cmed[b]
        v = f"  ({verdict(r, goal, kind)})" if goal is not None else ""
        print(f"  {a + ' / ' + b:18s} CPU {r:6.3f}   wall {med[a] / med[b]:6.3f}   "
              f"min wall {mins[a] / mins[b]:6.3f}{v}")

    if "bare" in med:
        line("extract", "bare")
    if "hidden" in med:
        line("extract", "hidden", 1.15)
        if "hooks" in med:
            line("hooks", "hidden")
    for other in ("nnsight", "tlens"):
        if other in med:
            line(other, "extract", 1.0, ">=")
            if "hooks" in med:
                line(other, "hooks", 1.0, ">=")
    print(f"# load average at end: {', '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")

    if args.profile:  # where extract_to_store's time goes: pyinstrument if installed, else torch.profiler
        try:
            from pyinstrument import Profiler
        except ImportError:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                extract()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        else:
            prof = Profiler(interval=0.0005)
            prof.start()
            for _ in range(args.profile_calls):
                extract()
            prof.stop()
            print(prof.output_text(unicode=False, color=False))
    tmp.cleanup()


if __name__ == "__main__":
    main()
