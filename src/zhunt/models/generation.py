"""The one batched greedy generator of the project, with optional per-prompt hidden-state edits.

:func:`generate` runs ``model.generate`` (greedy, KV cache) over length-sorted,
left-padded batches and hands results back in input order. Two optional
extras ride on forward hooks (:mod:`zhunt.models.hooks`):

* **edits** — per prompt, a function that rewrites that prompt's hidden states
  at one decoder layer's site (:mod:`zhunt.models.site`: the stream entering it,
  ``site="input"``, or its output, ``site="output"``) during the prefill (the KV cache carries
  the change to every later token), optionally also at every generated
  position. Rows of one batch may carry different edits; a
  :class:`SubspaceEdit` (the patching formulas of Exp. A) is applied to all
  rows of a batch at once with one batched matmul, any other callable row by
  row.
* **record_layers** — per generated token, the output of chosen decoder layers
  at the position that emitted it (input to the GARCH analysis of the
  zh-vs-en generation trajectories).

:func:`score` is the teacher-forced twin of :func:`generate`: the same
batches, padding and edits, no generation. It reads the next-token
distribution at the first answer position (the last prompt position) and the
teacher-forced log-likelihood of given continuations. Like generation, it
prefills each prompt (+ prefix) once under its edit, keeping the KV cache, and
runs the continuations on copies of that cache (one per continuation) in a
second, unedited pass.

Teacher-forced scoring
----------------------
For prompt ``i`` with tokens ``x_1..x_n``, an optional teacher-forced prefix
``a_1..a_L`` (``prefixes[i]``, default empty) and the (edited) model's
next-token distribution ``p_i(. | x, a)`` at the scored position ``n + L``
(the last prefix position, or the last prompt position when ``L = 0``, whose
logits produce generated token ``L``), :func:`score` returns

* ``first_argmax[i] = argmax_v p_i(v | x, a)`` — with ``L = 0``, generated
  token 0 of greedy :func:`generate` with the same edits;
* ``lp_candidates[i, j] = log p_i(c_ij | x)`` for candidate tokens ``c_ij``;
* ``lp_groups[i, g] = log sum_{v in G_g} p_i(v | x)`` for token groups ``G_g``
  (vocabulary masks, e.g. one script's tokens);
* ``lp_continuations[i, j] = sum_t log p(y_t | x, a, y_<t)`` for continuation
  ``y = y_1..y_m`` appended after the prefix (teacher forced; edits act on the
  prompt positions only, exactly as in generation's prefill, and reach the
  prefix and the continuation through the keys/values of the edited positions;
  with ``patch_prefix=True`` they act on the prefix positions too, so that an
  interchange of the whole prompt + prefix context is exact).

Positions are ``cumsum(attention_mask) - 1`` as in ``generate``'s prefill, so
left padding does not shift RoPE. Logits are computed only for the scored
position and the continuation positions (``logits_to_keep``), in float32 for
the log-softmax.

Conventions
-----------
* Positions: with left padding, prompt ``i`` of length ``n_i`` occupies the
  last ``n_i`` columns of its batch. Its *patchable* positions are its real
  (non-pad) tokens that are not special tokens (``tokenizer.all_special_ids``;
  BOS and friends have outlier norms and are not part of the content), or all
  real tokens with ``patch_special=True``. Pads are never changed.
* Generated steps: the state of step ``t`` (``t = 0 .. n_new - 1``) is the
  layer output at the sequence position whose logits produced generated token
  ``t``: the last prompt position for ``t = 0`` (prefill), the position of
  generated token ``t - 1`` for ``t >= 1`` (decode step ``t``). It equals the
  state at position ``n_prompt - 1 + t`` of a teacher-forced forward pass over
  prompt + generated tokens.
* A row stops at its first eos (kept in ``token_ids`` and counted in
  ``n_new_tokens``; dropped from ``text``). Decoding is greedy and the run is
  deterministic (no sampling, fixed batch order).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from zhunt.models.batching import halve_on_oom, left_pad, tokenize_prompts
from zhunt.models.hooks import capture, patch, record
from zhunt.progress import Progress
from zhunt.models.site import check_site

__all__ = ["SubspaceEdit", "generate", "score", "EDIT_MODES"]

#: Modes of :class:`SubspaceEdit`: which part of ``h`` is replaced by the source.
EDIT_MODES = ("span", "complement", "full")
_MODE_CODE = {m: i for i, m in enumerate(EDIT_MODES)}


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.float32 and x.device.type == "cpu" and not x.requires_grad:
            return x  # shared, not copied: many edits may hold the same basis
        return x.detach().to(dtype=torch.float32, device="cpu")
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


@dataclass(eq=False)
class SubspaceEdit:
    """Replace one subspace of the hidden state by the same subspace of a source.

    With ``R`` the replaced subspace and ``P_R`` its orthogonal projector, every
    patched position ``t`` becomes

    ``h[t] <- h[t] - P_R h[t] + P_R s[t] = P_{R^perp} h[t] + P_R s[t]``

    * ``mode="span"``: ``R = span(V)`` (rows of ``basis``), i.e. with ``V = V_Z``
      the Z-patch of seed 000: ``h <- P_Z⊥ h + P_Z s``;
    * ``mode="complement"``: ``R = span(V)^⊥``, i.e. the Z⊥-patch
      ``h <- P_Z h + P_Z⊥ s``;
    * ``mode="full"``: ``R = R^d`` (``basis`` unused), the full patch ``h <- s``.

    Parameters
    ----------
    basis : array or torch.Tensor of shape (k, d), or None
        Orthonormal rows ``V`` (``P = V^T V``); ``None`` only for ``mode="full"``.
        Pass the *same* tensor object to many edits to avoid copies.
    source : array or torch.Tensor of shape (d,) or (T_i, d)
        ``s``: one vector broadcast to every patched position (mean-pooled
        source) or one row per patched position of the prompt (per-token
        source, e.g. OT-aligned), in position order. At *generated* positions
        (``positions="all"``) the mean of the rows is used.
    mode : {"span", "complement", "full"}

    Notes
    -----
    Calling the edit on ``h`` (``(T_i, d)`` or ``(1, d)``) applies the formula
    directly; :func:`generate` applies a batch of them with one ``bmm``. The
    arithmetic is done in float32 whatever the model dtype.
    """

    basis: object
    source: object
    mode: str = "span"

    def __post_init__(self):
        if self.mode not in EDIT_MODES:
            raise ValueError(f"mode must be one of {EDIT_MODES}, not {self.mode!r}")
        self.source = _as_tensor(self.source)
        if self.source.ndim not in (1, 2):
            raise ValueError(f"source must be (d,) or (T, d), got shape {tuple(self.source.shape)}")
        if self.mode == "full":
            self.basis = None
        else:
            if self.basis is None:
                raise ValueError(f"mode {self.mode!r} needs a basis (k, d)")
            self.basis = _as_tensor(self.basis)
            if self.basis.ndim != 2 or self.basis.shape[1] != self.source.shape[-1]:
                raise ValueError(f"basis has shape {tuple(self.basis.shape)}, expected (k, "
                                 f"{self.source.shape[-1]})")

    @property
    def d(self) -> int:
        """Hidden size ``d``."""
        return int(self.source.shape[-1])

    def source_rows(self, n: int) -> torch.Tensor:
        """The source for ``n`` patched prompt positions, ``(n, d)`` float32."""
        if self.source.ndim == 1:
            return self.source.expand(n, -1)
        if self.source.shape[0] != n:
            raise ValueError(f"per-token source has {self.source.shape[0]} rows but the prompt has "
                             f"{n} patchable positions")
        return self.source

    def head(self, n: int) -> "SubspaceEdit":
        """The same edit on the first ``n`` patched positions only (a per-token source keeps its first ``n`` rows).

        An edit built for prompt + teacher-forced prefix positions
        (:func:`score` with ``patch_prefix=True``) gives, with ``n`` = the
        prompt's patchable positions, the edit of the same prompt in
        :func:`generate`. A broadcast ``(d,)`` source is returned unchanged.
        """
        if self.source.ndim == 1:
            return self
        if not 0 < int(n) <= self.source.shape[0]:
            raise ValueError(f"head({n}) of a source with {self.source.shape[0]} rows")
        return SubspaceEdit(self.basis, self.source[:int(n)], self.mode)

    def generated_source(self) -> torch.Tensor:
        """The source used at generated positions, ``(d,)``: the mean of the source rows."""
        return self.source if self.source.ndim == 1 else self.source.mean(dim=0)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """Apply the edit to one prompt's rows.

        Parameters
        ----------
        h : torch.Tensor
            ``(T_i, d)`` patchable prompt positions, or ``(1, d)`` for a
            generated position (a per-token source with ``T_i != 1`` rows then
            contributes its mean).

        Returns
        -------
        torch.Tensor
            Same shape and dtype as ``h``.
        """
        hf = h.float()
        per_token = self.source.ndim == 2
        if per_token and hf.shape[0] == 1 and self.source.shape[0] != 1:
            s = self.generated_source().expand_as(hf)
        else:
            s = self.source_rows(hf.shape[0])
        s = s.to(hf.device)
        if self.mode == "full":
            return s.clone().to(h.dtype)
        V = self.basis.to(hf.device)
        proj = ((s - hf) @ V.T) @ V  # P_V (s - h)
        out = hf + proj if self.mode == "span" else s - proj
        return out.to(h.dtype)


def _callable_all(edits) -> bool:
    return all(e is None or callable(e) for e in edits)


class _BatchEditor:
    """The patch function of one batch: applies every row's edit inside one hook call."""

    def __init__(self, edits: Sequence, patchable: torch.Tensor):
        self.edits = list(edits)
        self.patchable = patchable  # (B, T_p) bool
        B, T = patchable.shape
        self.vec_rows = [b for b, e in enumerate(self.edits) if isinstance(e, SubspaceEdit)]
        self.fn_rows = [b for b, e in enumerate(self.edits)
                        if e is not None and not isinstance(e, SubspaceEdit)]
        self.S = self.V = self.mode = self.S_gen = None
        if self.vec_rows:
            d = self.edits[self.vec_rows[0]].d
            kmax = max((e.basis.shape[0] for e in (self.edits[b] for b in self.vec_rows) if e.basis is not None),
                       default=1)
            rows = torch.tensor(self.vec_rows)
            S = torch.zeros((len(rows), T, d))
            V = torch.zeros((len(rows), kmax, d))  # zero rows add nothing to the projection
            mode = torch.empty(len(rows), dtype=torch.long)
            S_gen = torch.zeros((len(rows), d))
            for i, b in enumerate(self.vec_rows):
                e = self.edits[b]
                if e.d != d:
                    raise ValueError(f"edits of one batch disagree on d ({e.d} vs {d})")
                pos = patchable[b].nonzero().squeeze(1)
                S[i, pos] = e.source_rows(len(pos))
                S_gen[i] = e.generated_source()
                if e.basis is not None:
                    V[i, :e.basis.shape[0]] = e.basis
                mode[i] = _MODE_CODE[e.mode]
            self.rows, self.S, self.V, self.mode, self.S_gen = rows, S, V, mode, S_gen

    def _vectorised(self, hf: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """Apply the SubspaceEdits of rows ``self.rows`` to ``hf`` (n, T, d) with sources ``S``."""
        V = self.V.to(hf.device)
        S = S.to(hf.device)
        proj = torch.bmm(torch.bmm(S - hf, V.transpose(1, 2)), V)  # P_V (s - h) per row
        mode = self.mode.to(hf.device)[:, None, None]
        return torch.where(mode == _MODE_CODE["span"], hf + proj,
                           torch.where(mode == _MODE_CODE["complement"], S - proj, S))

    def __call__(self, h: torch.Tensor, ctx) -> torch.Tensor:
        hf = h.float()
        new = hf.clone()
        B, T, _ = h.shape
        if ctx.is_prefill:
            if T != self.patchable.shape[1]:
                raise RuntimeError(f"prefill saw {T} positions, expected {self.patchable.shape[1]} "
                                   "(generation must use the KV cache)")
            if self.vec_rows:
                r = self.rows.to(h.device)
                new[r] = self._vectorised(hf[r], self.S)
            for b in self.fn_rows:
                pos = self.patchable[b].nonzero().squeeze(1).to(h.device)
                out = self.edits[b](h[b, pos])
                if out.shape != (len(pos), h.shape[-1]):
                    raise ValueError(f"edit of row {b} returned shape {tuple(out.shape)}, "
                                     f"expected {(len(pos), h.shape[-1])}")
                new[b, pos] = out.float()
        else:  # a generated position (positions="all"): (B, 1, d)
            if self.vec_rows:
                r = self.rows.to(h.device)
                new[r] = self._vectorised(hf[r], self.S_gen[:, None, :].expand(-1, T, -1))
            for b in self.fn_rows:
                new[b] = self.edits[b](h[b]).float()
        return new.to(h.dtype)


def _resolve_layer(model, layer) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    from zhunt.models import get_adapter

    return get_adapter(model).layers[int(layer)]


def _generation_config(model, tokenizer, max_new_tokens: int):
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id
    if eos is None:
        eos = getattr(model.generation_config, "eos_token_id", None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return GenerationConfig(max_new_tokens=int(max_new_tokens), do_sample=False, num_beams=1,
                            pad_token_id=pad, eos_token_id=eos, use_cache=True), eos, pad


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _check_edits(model, edits, n: int, layer_module):
    """Validate ``edits`` against ``n`` texts; return ``(edits or None, layer module or None)``."""
    if edits is None:
        return None, None
    edits = list(edits)
    if len(edits) != n:
        raise ValueError(f"{len(edits)} edits for {n} texts")
    if not _callable_all(edits):
        raise TypeError("every edit must be None, a SubspaceEdit or a callable f(h) -> h")
    if all(e is None for e in edits):
        return None, None
    if layer_module is None:
        raise ValueError("edits need layer_module (the decoder layer whose input or output is edited)")
    return edits, _resolve_layer(model, layer_module)


def _prompt_batches(tokenizer, texts, *, add_special_tokens: bool, batch_size: int):
    """Tokenise ``texts`` and cut them into length-sorted batches.

    Returns ``(ids, batches, special)``: the token ids of every text, the
    batches as lists of input indices (longest prompt first, ties in input
    order, so every caller pads a prompt the same way), and the special-token
    ids as a tensor.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = tokenize_prompts(tokenizer, texts, add_special_tokens=add_special_tokens)
    if any(len(s) == 0 for s in ids):
        raise ValueError(f"prompt {next(i for i, s in enumerate(ids) if not s)} tokenizes to no tokens")
    special = torch.tensor(sorted(set(int(t) for t in (tokenizer.all_special_ids or []))), dtype=torch.long)
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    return ids, [order[s:s + batch_size] for s in range(0, len(order), batch_size)], special


def _patchable(input_ids: torch.Tensor, attn: torch.Tensor, special: torch.Tensor,
               patch_special: bool) -> torch.Tensor:
    """``(B, T)`` bool: real tokens, special tokens excluded unless ``patch_special``."""
    real = attn.bool()
    return real if patch_special else real & ~torch.isin(input_ids, special)


def prefix_masks(input_ids: torch.Tensor, attn: torch.Tensor, special: torch.Tensor, patch_special: bool,
                 prefix_lens: Sequence[int], patch_prefix: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Patchable positions of left-padded prompt + teacher-forced prefix rows.

    Parameters
    ----------
    input_ids, attn : torch.Tensor of shape (R, T)
        Rows whose last ``prefix_lens[r]`` columns hold row ``r``'s prefix.
    special, patch_special
        As :func:`_patchable`.
    prefix_lens : sequence of int
        ``R`` prefix lengths.
    patch_prefix : bool
        Whether the prefix positions are patched like prompt positions.

    Returns
    -------
    patchable : torch.Tensor (R, T) bool
        The positions an edit changes: the prompt's patchable tokens, plus the
        prefix's with ``patch_prefix``.
    prefix : torch.Tensor (R, T) bool
        The prefix's patchable positions (whether patched or not).
    """
    pm = _patchable(input_ids, attn, special, patch_special)
    prefix = torch.zeros_like(pm)
    T = pm.shape[1]
    for r, L in enumerate(prefix_lens):
        if L:
            prefix[r, T - int(L):] = pm[r, T - int(L):]
    return (pm if patch_prefix else pm & ~prefix), prefix


def _enter_edits(stack: contextlib.ExitStack, layer, row_edits: Sequence, patchable: torch.Tensor, *,
                 positions: str, site: str) -> None:
    """Install one batch's edits (a :class:`_BatchEditor`) on ``layer`` at ``site``, if any."""
    if layer is None or not any(e is not None for e in row_edits):
        return
    has = torch.tensor([e is not None for e in row_edits])
    editor = _BatchEditor(row_edits, patchable)
    stack.enter_context(patch(layer, editor, positions=positions, prompt_mask=patchable & has[:, None],
                              site=site))


def generate(model, tokenizer, texts: Sequence[str], *, max_new_tokens: int = 100, batch_size: int = 16,
             add_special_tokens: bool = True, layer_module=None, edits: Sequence | None = None,
             positions: str = "prompt", record_layers: Sequence | Mapping | None = None,
             patch_special: bool = False, site: str = "output") -> list[dict]:
    """Greedy, batched, deterministic generation with optional per-prompt hidden-state edits.

    Parameters
    ----------
    model, tokenizer
        A transformers causal LM in eval mode (``zhunt.models.load_model``) and its tokenizer
        (``eos_token_id`` stops a row; ``pad_token_id``, or eos, pads).
    texts : sequence of str
        ``N`` prompts (already rendered with their template).
    max_new_tokens, batch_size : int
        Most tokens generated per prompt (eos included); prompts per ``model.generate`` call,
        length-sorted (longest first, ties in input order; results in input order). A batch that runs
        out of CUDA memory is retried as two halves, down to one (:func:`zhunt.models.batching.halve_on_oom`).
    add_special_tokens : bool
        Passed to the tokenizer (False for chat-rendered prompts, which already hold BOS).
    layer_module : nn.Module or int, optional
        The decoder layer ``l`` (or its 0-based index) at whose ``site`` the edits act; required
        with ``edits``.
    edits : sequence, optional
        ``N`` entries aligned with ``texts``: ``None`` (leave the prompt alone), a
        :class:`SubspaceEdit` (vectorised over the batch), or any callable ``f(h) -> h_new`` of
        the prompt's ``(T_i, d)`` patchable positions (in position order); with
        ``positions="all"`` also called once per generated position with its ``(1, d)`` row.
    positions : {"prompt", "all"}
        Edit the prompt positions at prefill only (the KV cache carries the change), or also
        every generated position.
    record_layers : sequence or mapping, optional
        Decoder layers (modules or indices; a mapping ``name -> layer``) whose per-step outputs
        are recorded (module docstring: which position step ``t`` is).
    patch_special : bool
        Also edit special-token positions (BOS...). Pads are never edited.
    site : {"output", "input"}
        Where at ``layer_module`` the edits act (:mod:`zhunt.models.site`): the stream entering layer ``l``
        (hidden index ``l``, a pre-hook) or its output (``l + 1``; the default, callers pass the site).

    Returns
    -------
    list of dict
        One per text, in input order: ``text`` (decoded continuation, special tokens skipped),
        ``token_ids`` (list of int, up to and including the first eos), ``n_new_tokens``,
        ``n_prompt_tokens``, and, with ``record_layers``, ``states``: ``{key: ndarray
        (n_new_tokens, d) float32}`` keyed by the given index / mapping key.
    """
    texts = list(texts)
    n = len(texts)
    _check_generate_args(positions, site, batch_size)
    edits, layer = _check_edits(model, edits, n, layer_module)
    rec_keys, rec_mods = _record_modules(model, record_layers)
    if n == 0:
        return []
    gc, eos, pad = _generation_config(model, tokenizer, max_new_tokens)
    eos_set = set() if eos is None else set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}
    ids, batches, special = _prompt_batches(tokenizer, texts, add_special_tokens=add_special_tokens,
                                            batch_size=batch_size)
    device = _model_device(model)
    results: dict[int, dict] = {}
    with torch.inference_mode():
        queue = list(batches)
        progress, n_done = Progress(n, "generated prompt"), 0
        while queue:  # a batch that runs out of CUDA memory is retried as two halves, first
            batch = queue.pop(0)
            progress.update(n_done)
            n_done += len(batch)
            seqs = [ids[i] for i in batch]
            with contextlib.ExitStack() as stack:
                try:
                    new, cap = _generate_batch(model, gc, stack, seqs, pad, special, device,
                                               [edits[i] for i in batch] if edits is not None else None, layer,
                                               rec_mods, positions=positions, site=site, patch_special=patch_special)
                except Exception as exc:
                    queue[:0] = halve_on_oom(exc, batch, "generation")
                    continue
            states = _step_states(cap, len(rec_mods)) if cap is not None else None
            results.update(zip(batch, _batch_results(tokenizer, new, seqs, eos_set, states, rec_keys)))
    progress.update(n)
    return [results[i] for i in range(n)]


def _check_generate_args(positions: str, site: str, batch_size: int) -> None:
    if positions not in ("prompt", "all"):
        raise ValueError(f"positions must be 'prompt' or 'all', not {positions!r}")
    check_site(site)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _generate_batch(model, gc, stack: contextlib.ExitStack, seqs, pad: int, special: torch.Tensor, device,
                    row_edits, layer, rec_mods, *, positions: str, site: str, patch_special: bool):
    """Left-pad one batch, install its edits and recorders on ``stack`` and generate.

    Returns ``(new, cap)``: the ``(B, n_new)`` generated token ids (CPU) and the capture of the
    recorded layers (None without any).
    """
    input_ids, attn, _ = left_pad(seqs, pad)
    patchable = _patchable(input_ids, attn, special, patch_special)
    if row_edits is not None:
        _enter_edits(stack, layer, row_edits, patchable, positions=positions, site=site)
    cap = stack.enter_context(capture(rec_mods, range(len(rec_mods)))) if rec_mods else None
    out = model.generate(input_ids=input_ids.to(device), attention_mask=attn.to(device), generation_config=gc)
    return out[:, input_ids.shape[1]:].cpu(), cap


def _record_modules(model, record_layers) -> tuple[list, list]:
    """``(keys, modules)`` of :func:`generate`'s ``record_layers`` (a sequence of layers or ``name -> layer``)."""
    rec_keys, rec_mods = [], []
    if record_layers is not None:
        items = record_layers.items() if isinstance(record_layers, Mapping) else ((k, k) for k in record_layers)
        for key, lay in items:
            rec_keys.append(key)
            rec_mods.append(_resolve_layer(model, lay))
    return rec_keys, rec_mods


def _step_states(cap, n_mods: int) -> list[np.ndarray]:
    """Per recorded layer ``(B, calls, d)`` float32: the last position of every forward call (prefill, decode steps)."""
    states = []
    for li in range(n_mods):
        calls = cap[li]
        steps = [calls[0][:, -1]] + [c[:, -1] for c in calls[1:]]
        states.append(torch.stack(steps, dim=1).float().cpu().numpy())  # (B, calls, d)
    return states


def _batch_results(tokenizer, new: torch.Tensor, seqs, eos_set: set, states, rec_keys) -> list[dict]:
    """One result dict per row of a generated batch (cut after its first eos; see :func:`generate`)."""
    results = []
    for r in range(len(seqs)):
        toks = new[r].tolist()
        cut = next((p for p, t in enumerate(toks) if t in eos_set), None)
        if cut is not None:
            toks = toks[:cut + 1]
        res = {"text": tokenizer.decode(toks, skip_special_tokens=True), "token_ids": toks,
               "n_new_tokens": len(toks), "n_prompt_tokens": len(seqs[r])}
        if states is not None:
            res["states"] = {key: states[li][r, :len(toks)].copy() for li, key in enumerate(rec_keys)}
        results.append(res)
    return results


def _ragged(rows, n: int, what: str) -> list[list] | None:
    """``rows`` as ``n`` lists (of token ids or of token-id lists), or None."""
    if rows is None:
        return None
    rows = [list(r) for r in rows]
    if len(rows) != n:
        raise ValueError(f"{len(rows)} {what} for {n} texts")
    return rows


def _group_masks(token_groups, vocab: int) -> torch.Tensor | None:
    """Token groups as a ``(G, vocab)`` bool tensor (shorter masks padded with False)."""
    if token_groups is None:
        return None
    g = torch.as_tensor(np.asarray(token_groups, dtype=bool))
    if g.ndim == 1:
        g = g[None]
    if g.ndim != 2 or g.shape[1] > vocab:
        raise ValueError(f"token_groups must be (G, V) bool masks with V <= {vocab} (the model's "
                         f"vocabulary), got shape {tuple(g.shape)}")
    if g.shape[1] < vocab:
        g = torch.cat([g, torch.zeros((g.shape[0], vocab - g.shape[1]), dtype=torch.bool)], dim=1)
    return g


def score(model, tokenizer, texts: Sequence[str], *, continuations: Sequence | None = None,
          candidates: Sequence | None = None, token_groups=None, layer_module=None, site: str = "output",
          edits: Sequence | None = None, batch_size: int = 16, add_special_tokens: bool = True,
          patch_special: bool = False, prefixes: Sequence | None = None, patch_prefix: bool = False,
          prefix_states: bool = False) -> dict:
    """Teacher-forced scoring of prompts under the same per-prompt edits as :func:`generate`.

    Every quantity is read from the (edited) model's next-token distribution
    ``p_i(. | x, a)`` after prompt ``x`` and the teacher-forced prefix ``a``
    (module docstring, *Teacher-forced scoring*).

    Parameters
    ----------
    model, tokenizer, add_special_tokens
        As for :func:`generate`.
    texts : sequence of str
        ``N`` prompts.
    continuations : sequence, optional
        ``N`` entries, each a list of ``J_i`` continuations (lists of token
        ids, possibly empty); ragged ``J_i`` are padded with NaN.
    candidates : sequence, optional
        ``N`` entries, each a list of ``C_i`` token ids (ragged: NaN padded).
    token_groups : array-like of bool, optional
        ``(G, V)`` vocabulary masks (``V`` <= the model's vocabulary; missing
        columns count as False). An empty group gives ``-inf``.
    layer_module, site, edits, patch_special
        As for :func:`generate` (``positions="prompt"``: the continuation is
        never edited).
    batch_size : int
        Prompts per forward pass, batched exactly as :func:`generate` does
        (length-sorted, left-padded; results in input order; a batch that runs
        out of CUDA memory is retried as two halves, down to one). A prompt with
        ``J_i`` continuations is prefilled once; its continuations then run
        as ``J_i`` rows of a second pass on copies of its KV cache (right-padded;
        a continuation of one token needs no second pass). A batch whose
        second pass runs out of memory is halved and both passes are retried.
    prefixes : sequence, optional
        ``N`` lists of token ids (possibly empty) appended after each prompt;
        every quantity is taken at the position after the prefix. Not edited
        (like tokens generated with ``positions="prompt"``) unless ``patch_prefix``.
    patch_prefix : bool
        Edit the prefix's patchable positions like prompt positions: a
        per-token source then holds one row per patchable prompt position
        followed by one per patchable prefix position (:meth:`SubspaceEdit.head`
        gives the prompt-only edit for :func:`generate`).
    prefix_states : bool
        Also return ``prefix_states``: per prompt a ``(m_i, d)`` float32 array,
        the stream at ``layer_module``'s ``site`` (after any edit) at the
        prefix's ``m_i`` patchable positions, in position order (needs
        ``layer_module``).

    Returns
    -------
    dict
        ``first_argmax`` (N,) int64; ``lp_first`` (N,) float64, the log
        probability of that argmax token; ``n_prompt_tokens`` (N,) int64 (the
        prompt's, without the prefix); and
        when asked for, ``lp_candidates`` (N, max C_i), ``lp_groups`` (N, G),
        ``lp_continuations`` (N, max J_i) float64 with NaN padding.
    """
    texts = list(texts)
    n = len(texts)
    check_site(site)
    edits, layer = _check_edits(model, edits, n, layer_module)
    if prefix_states and layer_module is None:
        raise ValueError("prefix_states needs layer_module (the decoder layer whose stream is read)")
    req = _score_requests(n, continuations, candidates, prefixes)
    out = _score_outputs(n, req, token_groups)
    if prefix_states:
        out["prefix_states"] = [None] * n
    if n == 0:
        return out
    _, _, pad = _generation_config(model, tokenizer, 1)
    ids, batches, special = _prompt_batches(tokenizer, texts, add_special_tokens=add_special_tokens,
                                            batch_size=batch_size)
    rec_layer = _resolve_layer(model, layer_module) if prefix_states else None
    _score_batches(model, out, batches, ids, req, pad, special, token_groups=token_groups,
                   layer=layer, site=site, edits=edits, patch_special=patch_special,
                   patch_prefix=patch_prefix, rec_layer=rec_layer)
    return out


def _score_batches(model, out: dict, batches, ids, req: Mapping, pad, special, *, token_groups,
                   layer, site: str, edits, patch_special: bool, patch_prefix: bool,
                   rec_layer) -> None:
    """Run :func:`score`'s batches into ``out`` (in place), halving a batch that
    runs out of CUDA memory and retrying its halves first."""
    n = len(ids)
    device = _model_device(model)
    state = {"groups": None, "token_groups": token_groups}
    keep_kw = "logits_to_keep" in _forward_params(model)
    progress, n_done = Progress(n, "scored prompt"), 0
    with torch.inference_mode():
        queue = list(batches)
        while queue:
            batch = queue.pop(0)
            progress.update(n_done)
            n_done += len(batch)
            b = _score_batch(batch, ids, req, pad, special, patch_special, patch_prefix)
            try:
                lp0, cont_lp, seen = _score_pass(model, b, device, keep_kw, layer, site,
                                                 [edits[i] for i in batch] if edits is not None else None,
                                                 rec_layer=rec_layer)
            except Exception as exc:
                queue[:0] = halve_on_oom(exc, batch, "scoring")
                n_done -= len(batch)
                continue
            if seen is not None:
                _store_prefix_states(out, seen, b, batch)
            _store_first(out, state, lp0, batch, ids, req)
            if req["conts"] is not None:
                _store_continuations(out, lp0, cont_lp, b, batch)
    progress.update(n)


def _score_pass(model, b: Mapping, device, keep_kw: bool, layer, site: str, row_edits,
                rec_layer=None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The two forward passes of one scoring batch (:func:`_score_batch`'s tensors).

    1. The prefill: every prompt + prefix once, ``(B, T_p)``, under its edit (``row_edits``, one
       per prompt), with the KV cache kept; its last position gives the scored distribution.
    2. The continuations: the cache is copied to one row per continuation of two or more tokens
       (``b["src"]``) and those continuations' tokens but the last are run on top of it without
       edits (a continuation is never edited), which gives the log p of their later tokens.
       Skipped when no continuation has two tokens.

    Returns
    -------
    lp0 : torch.Tensor
        ``(B, V)`` float32 log-softmax at every prompt's scored position.
    cont_lp : torch.Tensor or None
        ``(R2, C2)`` float32: ``log p(y_{t+1} | x, a, y_<=t)`` of continuation row ``q`` of
        ``b["src"]`` (0 past its end); None without a second pass.
    seen : torch.Tensor or None
        ``(B, T_p, d)``: the stream at ``rec_layer``'s ``site`` after the edits (None without
        ``rec_layer``).
    """
    with contextlib.ExitStack() as stack:
        if row_edits is not None:
            _enter_edits(stack, layer, row_edits, b["patchable"], positions="prompt", site=site)
        seen = stack.enter_context(record(rec_layer, site)) if rec_layer is not None else None
        first = model(input_ids=b["input_ids"].to(device), attention_mask=b["attn"].to(device),
                      position_ids=b["pos"].to(device), use_cache=b["src"] is not None,
                      **({"logits_to_keep": 1} if keep_kw else {}))
    logits = first.logits[:, -1].float()
    lp0 = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    cont_lp = None
    if b["src"] is not None:
        name = _cache_name(first)  # transformers 5.x renames past_key_values to cache
        cache = first[name]
        cache.batch_select_indices(b["src"].to(device))  # one copy of the prompt's cache per continuation row
        logits = model(input_ids=b["cont_ids"].to(device), attention_mask=b["cont_attn"].to(device),
                       position_ids=b["cont_pos"].to(device), use_cache=True, **{name: cache}).logits.float()
        tgt = b["cont_tgt"].to(device)
        cont_lp = (logits.gather(-1, tgt.clamp(min=0)[..., None])[..., 0] - torch.logsumexp(logits, dim=-1))
        cont_lp = cont_lp.masked_fill(tgt < 0, 0.0)
    return lp0, cont_lp, (seen[-1] if seen is not None else None)


def _cache_name(output) -> str:
    """The name of a forward's KV cache, in its output and as the next forward's argument."""
    for name in ("cache", "past_key_values"):
        if output.get(name) is not None:
            return name
    raise RuntimeError("the model returned no KV cache (use_cache=True); scoring continuations needs one")


def _score_requests(n: int, continuations, candidates, prefixes) -> dict:
    """The ragged per-prompt requests of :func:`score` as lists of ints (``prefs`` default: empty)."""
    conts = _ragged(continuations, n, "continuation lists")
    cands = _ragged(candidates, n, "candidate lists")
    prefs = _ragged(prefixes, n, "prefixes")
    prefs = [[int(t) for t in a] for a in prefs] if prefs is not None else [[] for _ in range(n)]
    if conts is not None:
        conts = [[[int(t) for t in c] for c in row] for row in conts]
    return {"conts": conts, "cands": cands, "prefs": prefs}


def _score_outputs(n: int, req: Mapping, token_groups) -> dict:
    """The output arrays of :func:`score`, NaN-padded (``lp_groups`` is sized at the first batch)."""
    out: dict = {"first_argmax": np.zeros(n, dtype=np.int64), "lp_first": np.zeros(n),
                 "n_prompt_tokens": np.zeros(n, dtype=np.int64)}
    if req["cands"] is not None:
        out["lp_candidates"] = np.full((n, max((len(c) for c in req["cands"]), default=0)), np.nan)
    if req["conts"] is not None:
        out["lp_continuations"] = np.full((n, max((len(c) for c in req["conts"]), default=0)), np.nan)
    if n == 0 and token_groups is not None:
        out["lp_groups"] = np.zeros((0, np.atleast_2d(np.asarray(token_groups, dtype=bool)).shape[0]))
    return out


def _score_batch(batch: Sequence[int], ids, req: Mapping, pad: int, special: torch.Tensor,
                 patch_special: bool, patch_prefix: bool = False) -> dict:
    """One scoring batch's tensors (:func:`_score_pass`).

    Returns
    -------
    dict
        The prefill, one row per prompt of ``batch``, left-padded: ``input_ids``, ``attn``,
        ``pos`` (``cumsum(attn) - 1``), ``patchable`` (prompt positions, and the prefix's with
        ``patch_prefix``) and ``prefix`` (the prefix's patchable positions), all ``(B, T_p)``.
        The continuations: ``rows`` (every (prompt row r, continuation j)) and ``row_cont`` (their
        tokens); the ``R2`` rows with two or more tokens go to the second pass: ``src`` (R2,) their
        prompt rows, ``cont_ids`` (R2, C2) their tokens but the last (right-padded),
        ``cont_attn`` (R2, T_p + C2) the prompt's mask then theirs, ``cont_pos`` (R2, C2) the
        positions that continue the prompt's, ``cont_tgt`` (R2, C2) the token each position
        predicts (-1 past the end) and ``tail`` (R2,) their indices in ``rows``; ``src`` is None
        when no continuation has two tokens.
    """
    conts, prefs = req["conts"], req["prefs"]
    seqs = [ids[i] + prefs[i] for i in batch]  # the prefix is left-padded with its prompt
    input_ids, attn, pos = left_pad(seqs, pad)
    patchable, prefix = prefix_masks(input_ids, attn, special, patch_special, [len(prefs[i]) for i in batch],
                                     patch_prefix)
    rows = [(r, j) for r, i in enumerate(batch) for j in range(len(conts[i]) if conts is not None else 0)]
    row_cont = [conts[batch[r]][j] for r, j in rows]
    b = {"input_ids": input_ids, "attn": attn, "pos": pos, "patchable": patchable, "prefix": prefix,
         "rows": rows, "row_cont": row_cont, "src": None}
    tail = [q for q, c in enumerate(row_cont) if len(c) >= 2]
    if not tail:
        return b
    C2 = max(len(row_cont[q]) for q in tail) - 1
    src = torch.tensor([rows[q][0] for q in tail])
    cont_ids = torch.full((len(tail), C2), int(pad), dtype=torch.long)
    cont_tgt = torch.full((len(tail), C2), -1, dtype=torch.long)
    own = torch.zeros((len(tail), C2), dtype=torch.long)
    for q2, q in enumerate(tail):
        c = row_cont[q]
        cont_ids[q2, :len(c) - 1] = torch.tensor(c[:-1])
        cont_tgt[q2, :len(c) - 1] = torch.tensor(c[1:])
        own[q2, :len(c) - 1] = 1
    cont_attn = torch.cat([attn[src], own], dim=1)
    cont_pos = (cont_attn.cumsum(-1) - 1).clamp(min=0)[:, -C2:]
    b.update(src=src, cont_ids=cont_ids, cont_attn=cont_attn, cont_pos=cont_pos, cont_tgt=cont_tgt,
             tail=torch.tensor(tail))
    return b


def _store_first(out: dict, state: dict, lp0: torch.Tensor, batch: Sequence[int], ids, req: Mapping) -> None:
    """Argmax, its log p, candidate log p and group masses at the scored position of every prompt of a batch
    (``lp0`` (B, V), one row per prompt)."""
    cands = req["cands"]
    if state["token_groups"] is not None and state["groups"] is None:
        state["groups"] = _group_masks(state["token_groups"], lp0.shape[-1]).to(lp0.device)
        out["lp_groups"] = np.zeros((len(out["first_argmax"]), state["groups"].shape[0]))
    groups = state["groups"]
    top = lp0.argmax(dim=-1)
    lp_g = None
    if groups is not None:  # (B, G): log of each group's probability mass
        lp_g = torch.stack([torch.logsumexp(lp0.masked_fill(~gm, -torch.inf), dim=-1) for gm in groups],
                           dim=1).double().cpu().numpy()
    for r, i in enumerate(batch):
        out["first_argmax"][i] = int(top[r])
        out["lp_first"][i] = float(lp0[r, top[r]])
        out["n_prompt_tokens"][i] = len(ids[i])
        if cands is not None and cands[i]:
            out["lp_candidates"][i, :len(cands[i])] = \
                lp0[r, torch.tensor(cands[i], device=lp0.device)].double().cpu().numpy()
        if lp_g is not None:
            out["lp_groups"][i] = lp_g[r]


def _store_prefix_states(out: dict, h: torch.Tensor, b: Mapping, batch: Sequence[int]) -> None:
    """``prefix_states``: every prompt's stream ``h`` (B, T_p, d) at its prefix's patchable positions."""
    for r, i in enumerate(batch):
        out["prefix_states"][i] = h[r, b["prefix"][r].to(h.device)].float().cpu().numpy()


def _store_continuations(out: dict, lp0: torch.Tensor, cont_lp: torch.Tensor | None, b: Mapping,
                         batch: Sequence[int]) -> None:
    """``lp_continuations``: the summed teacher-forced log p of every continuation of a batch (its first
    token from ``lp0``, the others from the second pass's ``cont_lp``)."""
    later = {}
    if cont_lp is not None:
        later = dict(zip(b["tail"].tolist(), cont_lp.double().sum(dim=1).cpu().tolist()))
    for q, ((r, j), c) in enumerate(zip(b["rows"], b["row_cont"])):
        out["lp_continuations"][batch[r], j] = float(lp0[r, c[0]].double()) + later.get(q, 0.0) if c else 0.0


def _forward_params(model) -> set:
    import inspect

    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()
