"""Distributed alignment search (DAS): a learned k-dim interchange subspace at one layer and site.

DAS asks how much *any* k-dimensional linear subspace of the residual stream at
decoder layer ``l`` and ``site`` (:mod:`zhunt.models.site`) can carry of a donor's
behaviour. With ``V`` a ``(k, d)`` matrix of orthonormal rows, the interchange
along ``span(V)`` at every patched prompt position ``t`` of base prompt ``i``
is the span-mode :class:`zhunt.models.generation.SubspaceEdit`

``h_t <- h_t + V^T V (s_{i,t} - h_t)``   (row form: ``h + (s - h) V^T V``)

where ``s_i`` is the source: position-aligned rows from the donor prompt
``(T_i, d)``, or one broadcast vector ``(d,)`` such as the donor's mean. DAS
fits ``V`` by maximising the interchange log-likelihood of the donor run's own
first answer token ``y_i`` at the last prompt position, model weights frozen:

``V* = argmax_{V V^T = I_k}  (1/N) sum_i log p_theta(y_i | x_i ; interchange_V(s_i))``

(Geiger et al.'s distributed alignment search, with the donor run's output as
the counterfactual target). Minibatch Adam on the mean cross-entropy.

Parametrisation
---------------
``V^T`` is the weight ``(d, k)`` of a :func:`torch.nn.utils.parametrizations.orthogonal`
parametrisation (Householder map, the default for tall matrices, with
PyTorch's dynamic trivialisation). Why: the rows stay orthonormal to float
precision at *every* step (no penalty term, no drift, no re-orthonormalising
after the optimiser step), the cost is ``O(d k^2)`` per step rather than a
``d x d`` matrix exponential (which matters at ``d = 2048``), and an initial
basis (e.g. V_Z) is taken exactly as the starting point. pyvene is not used:
it is not installed in the offline environment, and the interchange here is
five lines over :func:`zhunt.models.hooks.patch`.

Scoring
-------
The fitted basis is an ordinary subspace: :meth:`DASFit.edits` gives
:class:`~zhunt.models.generation.SubspaceEdit` objects for
:func:`zhunt.models.generation.score` / :func:`zhunt.models.generation.generate`, the same
scoring path as every other subspace (Z, random, ...). Its overlap with Z or
M_s is :func:`subspace_overlap` (Grassmann similarity and median principal
angle, :func:`zhunt.subspace.grassmann_similarity` /
:func:`zhunt.subspace.principal_angles`) of ``fit.basis``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from zhunt.models.batching import halve_on_oom, left_pad, pad_id, tokenize_prompts
from zhunt.models.generation import SubspaceEdit, _forward_params, _model_device, _resolve_layer, prefix_masks
from zhunt.models.hooks import patch
from zhunt.models.site import check_site

__all__ = ["DASFit", "fit_das", "subspace_overlap", "ORTHONORMAL_ATOL"]

#: Largest |V V^T - I| accepted for an initial basis.
ORTHONORMAL_ATOL = 1e-4


@dataclass
class DASFit:
    """A fitted DAS subspace.

    Attributes
    ----------
    basis : np.ndarray
        ``(k, d)`` float32, orthonormal rows ``V``.
    losses : np.ndarray
        ``(steps,)`` float64, the mean cross-entropy ``-log p(y | interchange)``
        of each step's minibatch (before that step's update).
    layer, site, k, steps, lr, batch_size, random_state
        The fit's settings.
    seconds : float
        Wall time of the fit.
    """

    basis: np.ndarray
    losses: np.ndarray
    layer: int
    site: str
    k: int
    steps: int
    lr: float
    batch_size: int
    random_state: int
    seconds: float

    def edits(self, sources: Sequence, mode: str = "span") -> list[SubspaceEdit]:
        """One :class:`SubspaceEdit` along the fitted basis per source (all share one basis tensor)."""
        V = torch.from_numpy(self.basis)
        return [SubspaceEdit(V, s, mode) for s in sources]


class _Basis(nn.Module):
    """Holds ``weight = V^T`` (d, k) under the orthogonal parametrisation."""

    def __init__(self, init_t: torch.Tensor, random_state: int):
        super().__init__()
        self.weight = nn.Parameter(init_t.clone())
        # registering completes V^T to a d x d orthogonal base with torch's global RNG: seed it
        # locally so the fit is reproducible and the caller's RNG state is left alone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(random_state))
            torch.nn.utils.parametrizations.orthogonal(self, "weight")


def _initial_basis(init, k: int, d: int, random_state: int) -> torch.Tensor:
    """``(k, d)`` float32 orthonormal rows: ``init`` (checked) or Haar-random (QR of a Gaussian)."""
    if init is None:
        g = torch.Generator().manual_seed(int(random_state))
        q, r = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))[None, :]  # Haar: fix the QR sign ambiguity
        return q.T.float().contiguous()
    V = torch.as_tensor(np.asarray(init, dtype=np.float32))
    if V.shape != (k, d):
        raise ValueError(f"init basis has shape {tuple(V.shape)}, expected ({k}, {d})")
    err = float((V.double() @ V.double().T - torch.eye(k, dtype=torch.float64)).abs().max())
    if err > ORTHONORMAL_ATOL:
        raise ValueError(f"init basis rows are not orthonormal (max |V V^T - I| = {err:.2e})")
    return V


def fit_das(model, tokenizer, texts: Sequence[str], sources: Sequence, targets: Sequence[int], *,
            layer: int, site: str, k: int, steps: int = 200, lr: float = 1e-2, batch_size: int = 16,
            init=None, random_state: int = 0, add_special_tokens: bool = True,
            patch_special: bool = False, prefixes: Sequence | None = None, patch_prefix: bool = False) -> DASFit:
    """Fit a k-dim interchange subspace at ``layer`` / ``site`` by Adam (model weights frozen).

    Parameters
    ----------
    model, tokenizer
        A causal LM and its tokenizer (as for :func:`zhunt.models.generation.generate`).
    texts : sequence of str
        ``N`` base prompts ``x_i``.
    sources : sequence
        ``N`` sources ``s_i``, as :class:`~zhunt.models.generation.SubspaceEdit` takes
        them: ``(d,)`` (broadcast to every patched position) or ``(T_i, d)``
        (one row per patchable position of prompt ``i``, in position order:
        its non-special tokens, or all real tokens with ``patch_special``).
    targets : sequence of int
        ``N`` token ids ``y_i``: the donor run's own first answer token, the
        next token after ``prefixes[i]``.
    layer : int
        Decoder layer ``l`` (0-based).
    site : {"input", "output"}
        Where at layer ``l`` the interchange acts (hidden index ``l`` or ``l + 1``).
    k : int
        Subspace dimension, ``1 <= k <= d``.
    steps : int
        Adam steps (one minibatch each).
    lr : float
        Adam learning rate.
    batch_size : int
        Prompts per minibatch; minibatches walk through a fresh permutation of
        the prompts every epoch. A minibatch that runs out of CUDA memory is
        run as accumulated halves (the same gradient), down to one prompt a
        pass (logged).
    init : array-like of shape (k, d), optional
        Starting basis (orthonormal rows), e.g. V_Z; Haar-random otherwise.
    random_state : int
        Seeds the random start and the minibatch order. On CPU the fit is
        bitwise reproducible; on GPU up to the usual kernel non-determinism.
    add_special_tokens, patch_special : bool
        As for :func:`zhunt.models.generation.generate` (pads are never patched).
    prefixes : sequence, optional
        ``N`` lists of token ids (possibly empty) teacher-forced after each
        prompt, as in :func:`zhunt.models.generation.score`; the loss is
        ``-log p(y_i | x_i, prefix_i)`` under the interchange.
    patch_prefix : bool
        Interchange the prefix positions too (as ``score(..., patch_prefix=True)``):
        a per-token source then has one more row per patchable prefix position.

    Returns
    -------
    DASFit
    """
    texts = list(texts)
    check_site(site)
    data = _training_data(model, tokenizer, texts, sources, targets, k=k, steps=steps, batch_size=batch_size,
                          add_special_tokens=add_special_tokens, patch_special=patch_special, prefixes=prefixes,
                          patch_prefix=patch_prefix)
    n, d = len(texts), data["d"]
    device = _model_device(model)
    basis = _Basis(_initial_basis(init, int(k), d, random_state).T, random_state).to(device)
    t0 = time.perf_counter()
    losses = _optimise(model, _resolve_layer(model, layer), basis, data, n, steps=int(steps), lr=lr,
                       batch_size=int(batch_size), random_state=int(random_state), site=site,
                       patch_special=patch_special, patch_prefix=patch_prefix, device=device)
    with torch.no_grad():
        V = basis.weight.T.detach().float().cpu().contiguous().numpy()
    return DASFit(basis=V, losses=losses, layer=int(layer), site=site, k=int(k), steps=int(steps), lr=float(lr),
                  batch_size=int(batch_size), random_state=int(random_state),
                  seconds=time.perf_counter() - t0)


def _optimise(model, layer_mod, basis, data: Mapping, n: int, *, steps: int, lr: float, batch_size: int,
              random_state: int, site: str, patch_special: bool, patch_prefix: bool, device) -> np.ndarray:
    """:func:`fit_das`'s Adam loop: ``steps`` minibatch steps over fresh permutations
    of the ``n`` prompts (seeded by ``random_state``); returns the ``(steps,)`` losses."""
    opt = torch.optim.Adam(basis.parameters(), lr=lr)
    g = torch.Generator().manual_seed(random_state)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in _forward_params(model) else {}
    losses = np.zeros(steps)
    perm, cursor = torch.randperm(n, generator=g), 0
    chunk = batch_size  # prompts per forward pass; halved for good on a CUDA out-of-memory error
    with _frozen(model):
        for step in range(steps):
            if cursor >= n:
                perm, cursor = torch.randperm(n, generator=g), 0
            idx = perm[cursor:cursor + batch_size].tolist()
            cursor += batch_size
            losses[step], chunk = _accumulated_step(model, layer_mod, basis, data, idx, chunk, site=site,
                                                    patch_special=patch_special, patch_prefix=patch_prefix,
                                                    device=device, keep=keep)
            opt.step()
    return losses


def _training_data(model, tokenizer, texts: Sequence[str], sources: Sequence, targets: Sequence[int], *, k: int,
                   steps: int, batch_size: int, add_special_tokens: bool, patch_special: bool,
                   prefixes: Sequence | None, patch_prefix: bool = False) -> dict:
    """Checked, tokenised training data of :func:`fit_das`.

    Returns
    -------
    dict
        ``ids`` (prompt token ids), ``prefs`` (prefix token ids), ``src_rows`` (per prompt the
        ``(n_patch_i, d)`` source rows), ``y`` (N,) targets, ``special`` (special-token ids),
        ``pad``, ``d``.
    """
    n = len(texts)
    if n == 0:
        raise ValueError("fit_das needs at least one prompt")
    if len(sources) != n or len(targets) != n:
        raise ValueError(f"{n} texts but {len(sources)} sources and {len(targets)} targets")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    d = int(model.config.hidden_size)
    if not 1 <= int(k) <= d:
        raise ValueError(f"k must be in 1..{d}, got {k}")
    ids = tokenize_prompts(tokenizer, texts, add_special_tokens=add_special_tokens)
    prefs = [[int(t) for t in a] for a in prefixes] if prefixes is not None else [[] for _ in range(n)]
    if len(prefs) != n:
        raise ValueError(f"{n} texts but {len(prefs)} prefixes")
    special = torch.tensor(sorted(set(int(t) for t in (tokenizer.all_special_ids or []))), dtype=torch.long)
    pad = pad_id(tokenizer)
    src_rows = []
    for i, s in enumerate(ids):
        t = torch.tensor(s + prefs[i] if patch_prefix else s)
        n_patch = len(t) if patch_special else int((~torch.isin(t, special)).sum())
        e = SubspaceEdit(None, sources[i], "full")  # validates and normalises the source
        if e.d != d:
            raise ValueError(f"source {i} has d = {e.d}, the model has {d}")
        src_rows.append(e.source_rows(n_patch))
    return {"ids": ids, "prefs": prefs, "src_rows": src_rows, "special": special, "pad": pad, "d": d,
            "y": torch.as_tensor([int(t) for t in targets], dtype=torch.long)}


def _accumulated_step(model, layer_mod, basis: nn.Module, data: dict, idx: Sequence[int], chunk: int, *,
                      site: str, patch_special: bool, patch_prefix: bool, device, keep: dict) -> tuple[float, int]:
    """The gradient of one minibatch's mean loss on ``basis``, in forward passes of ``chunk`` prompts.

    Each pass adds ``(len(part) / len(idx)) * loss(part)`` to the gradient, so
    any ``chunk`` gives the minibatch's gradient (exactly the same pass when
    ``chunk >= len(idx)``). A CUDA out-of-memory error halves ``chunk``
    (logged, :func:`zhunt.models.batching.halve_on_oom`, down to 1) and
    redoes the minibatch from zero gradients.

    Returns
    -------
    loss : float
        The minibatch's mean cross-entropy.
    chunk : int
        The chunk size that fitted (later steps start from it).
    """
    while True:
        basis.zero_grad(set_to_none=True)
        try:
            total = 0.0
            for s in range(0, len(idx), chunk):
                part = idx[s:s + chunk]
                loss = _interchange_loss(model, layer_mod, basis.weight.T, data, part, site=site,
                                         patch_special=patch_special, patch_prefix=patch_prefix, device=device,
                                         keep=keep)
                if len(part) < len(idx):
                    loss = loss * (len(part) / len(idx))
                loss.backward()
                total += float(loss.detach())
            return total, chunk
        except Exception as exc:
            chunk = len(halve_on_oom(exc, list(idx[:chunk]), "DAS")[0])


def _interchange_loss(model, layer_mod, V: torch.Tensor, data: dict, idx: Sequence[int], *, site: str,
                      patch_special: bool, patch_prefix: bool, device, keep: dict) -> torch.Tensor:
    """Mean cross-entropy of the targets ``y[idx]`` under the interchange along ``V`` (k, d) (module docstring)."""
    prefs, d = data["prefs"], data["d"]
    input_ids, attn, pos = left_pad([data["ids"][i] + prefs[i] for i in idx], data["pad"])
    pm, _ = prefix_masks(input_ids, attn, data["special"], patch_special, [len(prefs[i]) for i in idx],
                         patch_prefix)
    S = torch.zeros((len(idx), input_ids.shape[1], d))
    for r, i in enumerate(idx):
        S[r, pm[r]] = data["src_rows"][i]
    S = S.to(device)

    def interchange(h, ctx, V=V, S=S):
        hf = h.float()
        return (hf + ((S - hf) @ V.T) @ V).to(h.dtype)

    with patch(layer_mod, interchange, prompt_mask=pm, site=site):
        logits = model(input_ids=input_ids.to(device), attention_mask=attn.to(device),
                       position_ids=pos.to(device), use_cache=False, **keep).logits[:, -1].float()
    return torch.nn.functional.cross_entropy(logits, data["y"][idx].to(device))


@contextlib.contextmanager
def _frozen(model):
    """Eval mode and no weight gradients for the fit; the model's flags are restored on exit."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def subspace_overlap(V: np.ndarray, W: np.ndarray) -> tuple[float, float]:
    """Overlap of two subspaces given by orthonormal rows: ``(similarity, median angle in degrees)``.

    Parameters
    ----------
    V : ndarray (k1, d)
    W : ndarray (k2, d)

    Returns
    -------
    similarity : float
        Grassmann similarity ``mean_i cos^2 theta_i`` (:func:`zhunt.subspace.grassmann_similarity`):
        1 for identical subspaces, 0 for orthogonal ones.
    angle : float
        Median of the ``min(k1, k2)`` principal angles ``theta_i`` in degrees
        (:func:`zhunt.subspace.principal_angles`): 0 identical, 90 orthogonal.
    """
    from zhunt.subspace import grassmann_similarity, principal_angles

    return (float(grassmann_similarity(V, W)),
            float(np.degrees(np.median(principal_angles(V, W)))))
