"""The M_s ablation of arXiv 2505.15257: project the data-driven language subspace out of the stream.

With ``M_s`` the ``(r, d)`` orthonormal rows of the language subspace estimated
from per-language mean activations (:func:`zhunt.activations.zspace.language_subspace`,
rule ``datadriven_z``) and ``P = M_s^T M_s``, the ablation rewrites the
residual stream at ``site`` (:mod:`zhunt.models.site`) of every decoder layer ``l`` of
a group, at every position (prompt, generated, teacher-forced continuation)::

    h <- h - lam * P h            (row form: h - lam * (h M_s^T) M_s)

``lam = 1`` removes the ``M_s`` component, ``lam = 0`` is the identity and
``lam > 1`` pushes the state past zero along ``M_s``. Each layer may carry its
own basis (``M_s`` is estimated per layer). :func:`ablate_subspace` is a
context manager, so it composes with :func:`zhunt.models.generation.generate` and
:func:`zhunt.models.generation.score` (and with their per-prompt edits).

The basis artifact
------------------
:func:`write_ms_basis` saves ``M_s`` for every layer, site and pooling of a
store in one HDF5 (``results/{model}/zspace/ms_basis.h5``, written by rule
``datadriven_z`` next to its tables, for every decoder layer): dataset ``{site}/L{layer}/{pooling}``
``(r, d)`` with attributes ``model, layer, site, hidden_index, k`` (``= r``),
``pooling, languages, refine``. :func:`read_ms_basis` reads one back.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from zhunt.errors import ZhuntError
from zhunt.models.hooks import transform
from zhunt.models.site import SITES, check_site, hidden_index

__all__ = ["ablate_subspace", "ablation_fn", "write_ms_basis", "read_ms_basis", "MS_BASIS_FORMAT"]

#: ``format`` attribute of the basis file.
MS_BASIS_FORMAT = "zhunt-ms-basis"


def ablation_fn(basis, lam: float):
    """The map ``h -> h - lam (h V^T) V`` for ``(..., d)`` tensors (float32 arithmetic, dtype kept).

    Parameters
    ----------
    basis : array-like of shape (r, d)
        Orthonormal rows ``V`` (``P = V^T V``).
    lam : float
        Ablation strength ``lam``.
    """
    V = torch.as_tensor(np.asarray(basis, dtype=np.float32))
    if V.ndim != 2:
        raise ValueError(f"basis must be (r, d), got shape {tuple(V.shape)}")
    cache: dict[torch.device, torch.Tensor] = {}
    lam = float(lam)

    def fn(h: torch.Tensor) -> torch.Tensor:
        Vd = cache.get(h.device)
        if Vd is None:
            Vd = cache[h.device] = V.to(h.device)
        hf = h.float()
        return (hf - lam * ((hf @ Vd.T) @ Vd)).to(h.dtype)

    return fn


@contextlib.contextmanager
def ablate_subspace(model, bases, layers: Sequence[int], *, site: str, lam: float = 1.0) -> Iterator[None]:
    """Apply ``h <- h - lam P_{M_s} h`` at ``site`` of every layer in ``layers``, at every position.

    Parameters
    ----------
    model : transformers causal LM
        Its decoder layers are found with :func:`zhunt.models.get_adapter`.
    bases : array-like (r, d) or mapping int -> array-like (r, d)
        One basis for every layer, or one per layer (every layer of ``layers``
        must have one).
    layers : sequence of int
        The layer group (0-based decoder layers).
    site : {"input", "output"}
        The stream entering each layer (hidden index ``l``) or its output
        (``l + 1``).
    lam : float
        Ablation strength.

    Notes
    -----
    Every position of every forward call is rewritten, pads and special tokens
    included (pads are never attended to). With ``site="output"`` at layer
    ``l`` and ``site="input"`` at ``l + 1`` the same stream would be ablated
    twice; a group uses one site.
    """
    from zhunt.models import get_adapter

    check_site(site)
    mods = get_adapter(model).layers
    layers = [int(l) for l in layers]
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers repeat: {layers}")
    d = int(model.config.hidden_size)
    fns = []
    for l in layers:
        if not 0 <= l < len(mods):
            raise ValueError(f"layer {l} out of range for {len(mods)} decoder layers")
        B = bases[l] if isinstance(bases, Mapping) else bases
        if np.shape(B)[-1] != d:
            raise ValueError(f"basis of layer {l} has shape {np.shape(B)}, expected (r, {d})")
        fns.append((mods[l], ablation_fn(B, lam)))
    with contextlib.ExitStack() as stack:
        for mod, fn in fns:
            stack.enter_context(transform(mod, fn, site=site))
        yield


# --------------------------------------------------------------------------- basis artifact
def write_ms_basis(path, store_path, model_name: str, layers: Sequence[int] | None = None, *, sites: Sequence[str] = SITES,
                   poolings: Sequence[str] = ("last", "mean"), rank: int | None = None,
                   refine: bool = True) -> list[dict]:
    """Estimate ``M_s`` for every (site, layer, pooling) of a store and save the bases in one HDF5.

    ``M_s`` of layer ``l`` at ``site`` comes from the per-language means at
    hidden index :func:`zhunt.models.site.hidden_index` ``(l, site)``
    (:func:`zhunt.activations.zspace.language_means`, every language of the store, then
    :func:`zhunt.activations.zspace.language_subspace` with ``rank`` and ``refine``) —
    the estimate rule ``datadriven_z`` tabulates.

    Parameters
    ----------
    path : path
        Destination ``.h5`` (written atomically).
    store_path : path
        Activation store (:mod:`zhunt.data.store`).
    model_name : str
        Recorded as the ``model`` attribute.
    layers : sequence of int, optional
        Decoder layers; default every layer of the store (so that any layer
        group can be ablated).
    sites, poolings : sequence of str
        Sites (:data:`zhunt.models.site.SITES`) and poolings (``"last"``, ``"mean"``).
    rank, refine
        As for :func:`zhunt.activations.zspace.language_subspace`.

    Returns
    -------
    list of dict
        One per dataset written: ``site, layer, hidden_index, pooling, k, d``.
    """
    import h5py

    from zhunt.io import atomic_path
    from zhunt.data.store import ActivationStore
    from zhunt.activations.zspace import language_means, language_subspace

    sites = [check_site(s) for s in sites]
    rows, data = [], []
    with ActivationStore(store_path) as store:
        langs = list(store.languages)
        if len(langs) < 2:
            raise ZhuntError(str(store_path), "the language subspace M_s needs at least 2 languages")
        layers = range(store.num_layers) if layers is None else layers
        for site in sites:
            for l in layers:
                j = hidden_index(int(l), site)
                if j > store.num_layers:
                    raise ZhuntError(str(store_path), f"layer {l} at site {site} is hidden index {j}, but the "
                                                      f"store holds 0..{store.num_layers}")
                for pooling in poolings:
                    Ms = language_subspace(language_means(store, j, pooling, langs)[0], rank, refine=refine)["M_s"]
                    attrs = {"model": model_name, "layer": int(l), "site": site, "hidden_index": j,
                             "k": int(Ms.shape[0]), "pooling": pooling, "languages": ",".join(langs),
                             "refine": bool(refine)}
                    data.append((f"{site}/L{int(l)}/{pooling}", Ms, attrs))
                    rows.append({"site": site, "layer": int(l), "hidden_index": j, "pooling": pooling,
                                 "k": int(Ms.shape[0]), "d": int(Ms.shape[1])})
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = MS_BASIS_FORMAT
            f.attrs["model"] = model_name
            f.attrs["convention"] = ("M_s rows: orthonormal (k = r, d) basis of the language subspace of the "
                                     "per-language means at hidden index hidden_index(layer, site) "
                                     "(zhunt.activations.zspace.language_subspace); ablation h <- h - lam M_s^T M_s h")
            for name, Ms, attrs in data:
                ds = f.create_dataset(name, data=np.asarray(Ms, dtype=np.float64))
                for key, val in attrs.items():
                    ds.attrs[key] = val
    return rows


def read_ms_basis(path, layer: int, site: str, pooling: str = "mean") -> np.ndarray:
    """Read ``M_s`` ``(k, d)`` float64 of one layer, site and pooling from :func:`write_ms_basis`'s file."""
    import h5py

    name = f"{check_site(site)}/L{int(layer)}/{pooling}"
    try:
        with h5py.File(Path(path), "r") as f:
            if f.attrs.get("format") != MS_BASIS_FORMAT:
                raise ZhuntError(str(path), f"not an M_s basis file (format {f.attrs.get('format')!r}, expected "
                                            f"{MS_BASIS_FORMAT!r})")
            if name not in f:
                have = []
                f.visititems(lambda n, o: have.append(n) if isinstance(o, h5py.Dataset) else None)
                raise ZhuntError(str(path), f"no basis {name}; the file holds {', '.join(have) or 'none'}")
            return f[name][()]
    except OSError as exc:
        raise ZhuntError(str(path), f"not a readable M_s basis file ({' '.join(str(exc).split())})") from None
