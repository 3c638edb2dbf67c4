"""Read and replace the residual stream at a decoder layer with PyTorch hooks.

Conventions (see ``docs/dev-contracts.md``):

* Decoder layers are 0-based (``layers[l]``). The *output* of decoder layer ``l``
  is hidden-state index ``j = l + 1``; the *input* of ``layers[0]`` is ``j = 0``
  (the embedding output exactly as the first decoder layer receives it, i.e.
  after Gemma's ``sqrt(d)`` scaling).
* transformers 5.x decoder layers return a plain tensor ``(B, T, d)``; older
  versions return a tuple whose element ``[0]`` is that tensor. Every hook here
  accepts both and hands back the same type it received.
* Patch hooks are registered with ``prepend=True`` so they run *before*
  transformers' own output-capture hooks (installed lazily on the first call
  with ``output_hidden_states=True``): hidden states reported by the model then
  show the patched values, like everything downstream.
* Sites (:mod:`zhunt.models.site`): :func:`patch` edits either the stream *entering*
  ``layers[l]`` (``site="input"``, hidden index ``l``: a forward **pre**-hook
  rewriting the layer's ``hidden_states`` argument, positional or keyword) or
  the layer's output (``site="output"``, hidden index ``l + 1``: a forward
  hook). Both are registered with ``prepend=True``.
* Inside ``model.generate`` with the KV cache, a layer hook sees the whole
  prompt once at prefill, ``(B, T_prompt, d)``, then ``(B, 1, d)`` per decode
  step. Without the cache every step is a full pass ``(B, T_prompt + n, d)``;
  :func:`patch` handles both.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from zhunt.models.site import check_site

__all__ = [
    "PatchContext",
    "Capture",
    "HiddenCapture",
    "capture",
    "capture_hidden_states",
    "patch",
    "replace_rows",
    "layer_hidden",
    "with_layer_hidden",
    "layer_input",
    "transform",
    "record",
]


# --------------------------------------------------------------------------- helpers
def layer_hidden(output) -> torch.Tensor:
    """Return the hidden-state tensor of a decoder layer's output.

    Parameters
    ----------
    output : torch.Tensor or tuple
        What the layer's ``forward`` returned: a tensor ``(B, T, d)``
        (transformers >= 5) or a tuple whose ``[0]`` is that tensor.

    Returns
    -------
    torch.Tensor
        ``(B, T, d)``.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"decoder layer returned {type(output).__name__}; expected a tensor or a tuple "
        "whose first element is the hidden-state tensor"
    )


def with_layer_hidden(output, hidden: torch.Tensor):
    """Return ``output`` with its hidden-state tensor replaced by ``hidden``.

    Keeps the container type: a tensor gives a tensor, a tuple a tuple with
    the remaining elements unchanged (a list gives a list).
    """
    if isinstance(output, torch.Tensor):
        return hidden
    rest = list(output[1:])
    if isinstance(output, list):
        return [hidden, *rest]
    return (hidden, *rest)


def layer_input(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple]]:
    """Find a decoder layer's ``hidden_states`` input among its call arguments.

    Parameters
    ----------
    args, kwargs : tuple, dict
        What a forward pre-hook registered with ``with_kwargs=True`` receives.
        ``hidden_states`` is ``args[0]`` (how transformers calls its decoder
        layers) or ``kwargs["hidden_states"]``.

    Returns
    -------
    h : torch.Tensor
        ``(B, T, d)``, the stream entering the layer.
    rebuild : callable
        ``rebuild(new) -> (args, kwargs)`` with ``hidden_states`` replaced by
        ``new`` and everything else unchanged: the value a pre-hook returns.
    """
    if args and isinstance(args[0], torch.Tensor):
        return args[0], lambda new: ((new, *args[1:]), kwargs)
    h = kwargs.get("hidden_states")
    if isinstance(h, torch.Tensor):
        return h, lambda new: (args, {**kwargs, "hidden_states": new})
    raise TypeError("could not find the hidden_states input of the decoder layer "
                    "(neither a positional tensor nor a hidden_states keyword)")


def replace_rows(h: torch.Tensor, new: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Take ``new`` where ``mask`` is True and ``h`` elsewhere.

    Parameters
    ----------
    h : torch.Tensor
        ``(B, T, d)`` original hidden states.
    new : torch.Tensor
        ``(B, T, d)`` replacement values (cast to ``h``'s dtype and device).
    mask : torch.Tensor
        ``(B, T)`` bool: positions whose row is replaced.

    Returns
    -------
    torch.Tensor
        ``(B, T, d)``, a new tensor; rows where ``mask`` is False are bitwise
        equal to ``h``.
    """
    if new.shape != h.shape:
        raise ValueError(f"replacement has shape {tuple(new.shape)}, expected {tuple(h.shape)}")
    if mask.shape != h.shape[:2]:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(h.shape[:2])}")
    mask = mask.to(device=h.device, dtype=torch.bool)
    return torch.where(mask.unsqueeze(-1), new.to(dtype=h.dtype, device=h.device), h)


# --------------------------------------------------------------------------- capture
class Capture:
    """Outputs of some decoder layers, one list entry per forward call.

    ``cap[l]`` is the list of detached tensors ``(B, T, d)`` that ``layers[l]``
    produced, in call order (one per forward; inside ``generate`` one per
    prefill/decode step). Tensors are detached, not copied.
    """

    def __init__(self, indices: Sequence[int]):
        self.indices = list(indices)
        self.outputs: dict[int, list[torch.Tensor]] = {i: [] for i in self.indices}

    def __getitem__(self, l: int) -> list[torch.Tensor]:
        return self.outputs[l]

    def clear(self) -> None:
        """Forget everything captured so far (keeps the hooks)."""
        for v in self.outputs.values():
            v.clear()


@contextlib.contextmanager
def capture(layers: Sequence[nn.Module], indices: Sequence[int] | None = None) -> Iterator[Capture]:
    """Collect the outputs of ``layers[l]`` for ``l`` in ``indices`` while active.

    Parameters
    ----------
    layers : sequence of nn.Module
        The decoder layers (``model.model.layers`` / ``get_adapter(model).layers``).
    indices : sequence of int, optional
        Decoder-layer indices (0-based); all layers by default. Negative
        indices count from the end.

    Yields
    ------
    Capture
        ``cap[l]`` is a list of ``(B, T, d)`` tensors, one per forward call.
    """
    n = len(layers)
    idx = []
    for i in (range(n) if indices is None else indices):
        if not -n <= i < n:
            raise IndexError(f"decoder layer index {i} out of range for {n} layers")
        idx.append(i % n)
    cap = Capture(idx)
    handles = []
    try:
        for l in idx:
            def hook(_mod, _args, output, _l=l):
                cap.outputs[_l].append(layer_hidden(output).detach())
            handles.append(layers[l].register_forward_hook(hook))
        yield cap
    finally:
        for hd in handles:
            hd.remove()


class HiddenCapture:
    """All ``L + 1`` hidden states of each forward call.

    ``cap.hidden[j]`` is a list of detached ``(B, T, d)`` tensors, one per
    forward call, for hidden-state index ``j`` in ``0..L``: ``j = 0`` is the
    input of ``layers[0]``, ``j = l + 1`` the raw output of ``layers[l]``
    (never the final norm).
    """

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.hidden: list[list[torch.Tensor]] = [[] for _ in range(num_layers + 1)]

    def clear(self) -> None:
        """Forget everything captured so far (keeps the hooks)."""
        for v in self.hidden:
            v.clear()


@contextlib.contextmanager
def capture_hidden_states(layers: Sequence[nn.Module]) -> Iterator[HiddenCapture]:
    """Capture every hidden state ``j = 0..L`` with hooks (no ``output_hidden_states``).

    ``j = 0`` comes from a forward *pre*-hook on ``layers[0]`` (what the first
    decoder layer actually receives, so model-internal embedding scaling such
    as Gemma's ``sqrt(d)`` is included); ``j = l + 1`` from a forward hook on
    ``layers[l]``.

    Parameters
    ----------
    layers : sequence of nn.Module
        The ``L`` decoder layers, in order.

    Yields
    ------
    HiddenCapture
    """
    cap = HiddenCapture(len(layers))
    handles = []

    def pre_hook(_mod, args, kwargs):
        cap.hidden[0].append(layer_input(args, kwargs)[0].detach())

    try:
        handles.append(layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
        for l, layer in enumerate(layers):
            def hook(_mod, _args, output, _j=l + 1):
                cap.hidden[_j].append(layer_hidden(output).detach())
            handles.append(layer.register_forward_hook(hook))
        yield cap
    finally:
        for hd in handles:
            hd.remove()


# --------------------------------------------------------------------------- patch
@dataclass
class PatchContext:
    """What a patch function learns about the current call.

    Attributes
    ----------
    call : int
        0-based count of forward calls through the layer since the patch was
        installed (or :meth:`PatchHandle.reset`).
    start : int
        Sequence position (0-based, counting pads) of the first column of
        ``h``: 0 for a full pass (prefill), ``T_prompt + n`` for decode step n.
    is_prefill : bool
        True for a full pass starting at position 0 (the prefill with the KV
        cache; every step without it).
    prompt_len : int
        ``T_prompt``, the padded prompt length.
    prompt_mask : torch.Tensor or None
        ``(B, T_prompt)`` bool, positions of the prompt allowed to change, as
        given to :func:`patch` (None if none was given).
    mask : torch.Tensor
        ``(B, T)`` bool, the positions of *this* call where ``fn``'s result is
        written; everything else keeps its input value.
    """

    call: int
    start: int
    is_prefill: bool
    prompt_len: int
    prompt_mask: torch.Tensor | None
    mask: torch.Tensor


class PatchHandle:
    """Returned by :func:`patch`; ``contexts`` lists the :class:`PatchContext` of every call."""

    def __init__(self):
        self.contexts: list[PatchContext] = []
        self._seen = 0
        self._prompt_len: int | None = None

    @property
    def calls(self) -> int:
        """Number of forward calls seen so far."""
        return len(self.contexts)

    def reset(self) -> None:
        """Treat the next call as a fresh prefill (e.g. between two ``generate`` calls)."""
        self.contexts.clear()
        self._seen = 0
        self._prompt_len = None


@contextlib.contextmanager
def patch(
    layer: nn.Module,
    fn: Callable[[torch.Tensor, PatchContext], torch.Tensor],
    *,
    positions: str = "prompt",
    prompt_mask: torch.Tensor | None = None,
    site: str = "output",
) -> Iterator[PatchHandle]:
    """Replace the residual stream ``h`` at a decoder layer by ``fn(h, ctx)`` at chosen positions.

    The hook is registered with ``prepend=True`` so it runs before any other
    hook of its kind on ``layer`` (transformers' hidden-state capture included).

    Parameters
    ----------
    layer : nn.Module
        One decoder layer ``layers[l]``.
    fn : callable
        ``fn(h, ctx) -> new`` with ``h`` and ``new`` of shape ``(B, T, d)``.
        Only rows where ``ctx.mask`` is True are taken from ``new``; ``fn`` is
        not called at all when no position of the call may change.
    positions : {"prompt", "all"}
        ``"prompt"`` (default): change prompt positions only; with the KV
        cache that is the prefill call, and the cache carries the change to
        later tokens. ``"all"``: also change every generated position (decode
        steps ``(B, 1, d)``).
    prompt_mask : torch.Tensor, optional
        ``(B, T_prompt)`` bool, prompt positions allowed to change (True for
        real, non-special tokens; pads must be False and are then never
        changed). Without it every position of the first call counts as a
        prompt position that may change — only right for unpadded inputs.
    site : {"output", "input"}
        ``"output"`` (default, kept for backward compatibility): edit the
        layer's output, hidden index ``l + 1`` (forward hook). ``"input"``:
        edit the stream entering the layer, hidden index ``l`` (forward
        pre-hook rewriting its ``hidden_states`` argument), so the layer's own
        attention — and the keys/values it caches — read the edited stream.
        Callers should pass the site explicitly (:mod:`zhunt.models.site`). At
        ``"input"``, a capture of hidden index ``l`` that records the output
        of ``layers[l-1]`` (``output_hidden_states``, :func:`capture_hidden_states`
        for ``l >= 1``) shows the *unedited* stream; a forward pre-hook on
        ``layers[l]`` registered later sees the edited one.

    Yields
    ------
    PatchHandle
        ``handle.contexts`` records each call; ``handle.reset()`` starts over.

    Notes
    -----
    A call is a *full pass* (start position 0) if it is the first call or has
    ``T > 1``; otherwise it is a decode step at the position following the
    previous call. This covers ``generate`` with and without the KV cache.
    Use one ``patch`` context (or ``reset()``) per ``generate`` call when
    prompts have length 1.
    """
    if positions not in ("prompt", "all"):
        raise ValueError(f"positions must be 'prompt' or 'all', not {positions!r}")
    check_site(site)
    handle = PatchHandle()
    pm_cache: dict[torch.device, torch.Tensor] = {}
    if prompt_mask is not None:
        if prompt_mask.ndim != 2:
            raise ValueError(f"prompt_mask must be (B, T_prompt), got shape {tuple(prompt_mask.shape)}")
        prompt_mask = prompt_mask.to(torch.bool)

    def edit(h: torch.Tensor) -> torch.Tensor | None:
        """The edited ``h`` of this call, or None to leave it alone."""
        ctx = _next_context(handle, h, prompt_mask, pm_cache, positions)
        handle.contexts.append(ctx)
        return replace_rows(h, fn(h, ctx), ctx.mask) if bool(ctx.mask.any()) else None

    with _hooked(layer, site, edit):
        yield handle


def _next_context(handle: PatchHandle, h: torch.Tensor, prompt_mask: torch.Tensor | None, pm_cache: dict,
                  positions: str) -> PatchContext:
    """The :class:`PatchContext` of the call that brings ``h`` (``(B, T, d)``), advancing ``handle``'s position."""
    B, T = h.shape[0], h.shape[1]
    call = handle.calls
    full = call == 0 or T > 1
    start = 0 if full else handle._seen
    if handle._prompt_len is None:
        handle._prompt_len = prompt_mask.shape[1] if prompt_mask is not None else T
    T_p = handle._prompt_len
    if full and (T < T_p or (call == 0 and T != T_p)):
        raise ValueError(f"prompt_mask covers {T_p} positions but the prefill call has {T}")
    handle._seen = start + T
    pos = torch.arange(start, start + T, device=h.device)
    in_prompt = pos < T_p  # (T,)
    mask = torch.zeros((B, T), dtype=torch.bool, device=h.device)
    n_prompt_cols = int(in_prompt.sum())
    if n_prompt_cols:
        if prompt_mask is not None:
            if prompt_mask.shape[0] != B:
                raise ValueError(f"prompt_mask has batch size {prompt_mask.shape[0]}, layer saw {B}")
            pm = pm_cache.get(h.device)
            if pm is None:
                pm = pm_cache[h.device] = prompt_mask.to(h.device)
            mask[:, :n_prompt_cols] = pm[:, start:start + n_prompt_cols]
        else:
            mask[:, :n_prompt_cols] = True
    if positions == "all":
        mask[:, n_prompt_cols:] = True
    return PatchContext(call=call, start=start, is_prefill=full, prompt_len=T_p, prompt_mask=prompt_mask, mask=mask)


@contextlib.contextmanager
def _hooked(layer: nn.Module, site: str, edit: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Run ``edit(h) -> new`` (None keeps ``h``) on the stream at ``layer``'s ``site`` in every forward call.

    ``site="output"``: a forward hook on the layer's output (hidden index ``l + 1``);
    ``"input"``: a forward pre-hook rewriting its ``hidden_states`` argument (hidden index ``l``).
    Registered with ``prepend=True``; removed on exit.
    """
    def hook(_mod, _args, output):
        new = edit(layer_hidden(output))
        return None if new is None else with_layer_hidden(output, new)  # None keeps the output

    def pre_hook(_mod, args, kwargs):
        h, rebuild = layer_input(args, kwargs)
        new = edit(h)
        return None if new is None else rebuild(new)

    if site == "output":
        hd = layer.register_forward_hook(hook, prepend=True)
    else:
        hd = layer.register_forward_pre_hook(pre_hook, prepend=True, with_kwargs=True)
    try:
        yield
    finally:
        hd.remove()


@contextlib.contextmanager
def transform(layer: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], *,
              site: str = "output") -> Iterator[None]:
    """Replace the stream ``h`` at ``layer``'s ``site`` by ``fn(h)`` at every position of every call.

    Stateless (no prompt/decode bookkeeping, unlike :func:`patch`): prefill,
    decode steps, teacher-forced passes and consecutive batches all get
    ``fn``, pads included (they are never attended to). Registered with
    ``prepend=True``.

    Parameters
    ----------
    layer : nn.Module
        One decoder layer ``layers[l]``.
    fn : callable
        ``fn(h) -> new``, ``(B, T, d)`` to ``(B, T, d)``.
    site : {"output", "input"}
        As for :func:`patch`.
    """
    check_site(site)
    with _hooked(layer, site, fn):
        yield


@contextlib.contextmanager
def record(layer: nn.Module, site: str = "output") -> Iterator[list]:
    """Collect the stream at ``layer``'s ``site`` (:mod:`zhunt.models.site`) in every forward call.

    Registered after any patch already on ``layer`` (not prepended), so it sees
    the stream as the layer reads it (``site="input"``) or as it leaves it
    (``"output"``): edited where a :func:`patch` edits it.

    Yields
    ------
    list of torch.Tensor
        One detached ``(B, T, d)`` tensor per forward call, in call order.
    """
    check_site(site)
    seen: list = []

    def hook(_mod, _args, output):
        seen.append(layer_hidden(output).detach())

    def pre_hook(_mod, args, kwargs):
        seen.append(layer_input(args, kwargs)[0].detach())

    if site == "output":
        hd = layer.register_forward_hook(hook)
    else:
        hd = layer.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield seen
    finally:
        hd.remove()
