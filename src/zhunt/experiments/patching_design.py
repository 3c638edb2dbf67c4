"""Exp. A, interchange design: cells, donor pairs, sources and the patches of every subspace.

This is the *design* seam of the causal test (then :mod:`zhunt.experiments.patching_cells`
runs a cell, :mod:`zhunt.experiments.patching_metrics` scores it,
:mod:`zhunt.experiments.patching_verdict` judges the primary cell and
:mod:`zhunt.report.patching_render` writes the tables and the figure).

Cell
    One Snakemake job: ``(site, layer, k, alignment, direction, source)``, named
    ``{site}_L{layer}_k{k}_{alignment}_{target}-from-{source_lang}_{source}``
    (:class:`Cell`). ``source`` is ``donor`` (a different problem) for every
    cell; the seed's same-problem design stays in :mod:`zhunt.experiments.patching`.

Pairs (:func:`donor_pairs`)
    Base ``i`` = the target-language prompt of problem ``i``. Its donors are the
    next ``n_donors`` problems after ``i`` in a permutation seeded with ``seed``
    whose key answer differs from ``i``'s (and, for ``aligned``, that share
    ``i``'s template and token length). The *counterfactual target* of a pair
    is the donor run: the model's own unpatched output on the donor's prompt in
    the target language.

Source per patched position ``t`` (:func:`interchange_source`), with ``X`` the
donor's states at hidden index ``j = hidden_index(layer, site)`` (special
tokens dropped) and ``H`` the base's own clean states there:

=============  =========================================================
``mean``       ``s(t) = mean_s X_src[s]``, ``X_src`` = the donor's prompt
               in the *other* language (seed 000's mean broadcast)
``ot``         ``s(t) = Σ_s π*[s, t] / b_t X_src[s]`` (exact OT plan between
               the donor's other-language cloud and ``H``)
``aligned``    ``s(t) = X[t]``, the donor's prompt in the *same* language,
               same template and token length: every position aligned
=============  =========================================================

Subspaces (:data:`SUBSPACES`; :func:`pair_edits` builds them, each as a
:class:`zhunt.models.generation.SubspaceEdit` with ``P_V = V^T V``)

==================  ==================================================================
``none``            no patch (the clean base run)
``z``               ``h <- h + P_Z (s - h)``
``zperp``           ``h <- h + P_Z⊥ (s - h)``
``full``            ``h <- s``
``random``          ``h <- h + P_R (s - h)``, ``R`` Haar-random k-dim, one fresh draw
                    per pair (:func:`zhunt.subspace.random_subspace`,
                    ``random_state = (seed, k, pair)``; the same draw at every layer)
``random_matched``  ``h <- h + α P_R (s - h)`` with the same ``R`` and
                    ``α = ||P_Z (S - H)||_F / ||P_R (S - H)||_F`` per pair, so the
                    patch moves the base's states by exactly the Z patch's norm
                    (``energy_ratio`` = 1 up to rounding; tolerance
                    :data:`ENERGY_TOLERANCE`)
``self_mean``       ``h <- h + P_Z (mean_t H[t] - h)``: the base's own mean Z-content
                    broadcast (broadcast damage without cross-lingual content)
``das``             the ``z`` formula along a learned k-dim basis (held-out pairs only)
==================  ==================================================================

``random_matched`` is written as a SubspaceEdit along ``R`` with the source
``S' = H + α (S - H)``: on the clean states ``H`` (the states the patched
forward sees at the site, since nothing upstream changes) it gives
``H + P_R (S' - H) = H + α P_R (S - H)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from zhunt.errors import ZhuntError
from zhunt.models.site import SITES
from zhunt.subspace import random_subspace

__all__ = ["SUBSPACES", "CELL_ALIGNMENTS", "CELL_SOURCES", "ENERGY_TOLERANCE", "Cell", "parse_cell",
           "donor_pairs", "heldout_split", "interchange_source", "extend_to_prefix", "matched_source", "patch_norm",
           "pair_bases", "pair_edits"]

#: Every subspace row of ``subspaces.tsv``, in table order.
SUBSPACES = ("none", "z", "zperp", "full", "random", "random_matched", "self_mean", "das", "ms_ablation")
#: Alignments of a cell: the seed's cross-language sources and the template-aligned interchange.
CELL_ALIGNMENTS = ("mean", "ot", "aligned")
#: Source problems of a cell (the seed's ``same`` design is the exploratory stage of zhunt.experiments.patching).
CELL_SOURCES = ("donor",)
#: ``random_matched``: largest allowed relative difference of its ``||Δh||`` from the Z patch's.
ENERGY_TOLERANCE = 0.10

_CELL_RE = re.compile(r"^(?P<site>input|output)_L(?P<layer>\d+)_k(?P<k>\d+)_(?P<alignment>mean|ot|aligned)_"
                      r"(?P<target>[a-z]{2})-from-(?P<source_lang>[a-z]{2})_(?P<source>donor)$")


@dataclass(frozen=True)
class Cell:
    """One Exp. A cell (one Snakemake job).

    ``direction`` is ``"target<-source_lang"``; ``aligned`` cells have
    ``source_lang == target``.
    """

    site: str
    layer: int
    k: int
    alignment: str
    direction: str
    source: str = "donor"

    def __post_init__(self):
        t, s = self.languages
        if self.site not in SITES or self.alignment not in CELL_ALIGNMENTS or self.source not in CELL_SOURCES:
            raise ValueError(f"bad cell {self!r}")
        if (t == s) != (self.alignment == "aligned"):
            raise ValueError(f"alignment {self.alignment!r} needs {'one' if self.alignment == 'aligned' else 'two'}"
                             f" language(s), got direction {self.direction!r}")

    @property
    def languages(self) -> tuple[str, str]:
        """``(target, source_lang)``."""
        t, _, s = self.direction.partition("<-")
        return t, s

    @property
    def hidden_index(self) -> int:
        from zhunt.models.site import hidden_index

        return hidden_index(self.layer, self.site)

    @property
    def name(self) -> str:
        t, s = self.languages
        return f"{self.site}_L{self.layer}_k{self.k}_{self.alignment}_{t}-from-{s}_{self.source}"

    def key(self) -> dict:
        """The cell's columns of every table: site, hidden_index, layer, k, alignment, direction, source."""
        return {"site": self.site, "hidden_index": self.hidden_index, "layer": self.layer, "k": self.k,
                "alignment": self.alignment, "direction": self.direction, "source": self.source}


def parse_cell(name: str) -> Cell:
    """Inverse of :attr:`Cell.name` (raises :class:`ZhuntError` naming the cell)."""
    m = _CELL_RE.match(str(name))
    if m is None:
        raise ZhuntError(f"cell {name!r}", "expected {site}_L{layer}_k{k}_{mean|ot|aligned}_{t}-from-{s}_donor")
    g = m.groupdict()
    try:
        return Cell(g["site"], int(g["layer"]), int(g["k"]), g["alignment"], f"{g['target']}<-{g['source_lang']}",
                    g["source"])
    except ValueError as exc:
        raise ZhuntError(f"cell {name!r}", str(exc)) from None


def donor_pairs(problems: Sequence[str], answers: Mapping[str, int], *, seed: int = 0, n_donors: int = 1,
                group: Callable[[str], object] | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """Base–donor pairs of the interchange design.

    Parameters
    ----------
    problems : sequence of str
        Problem ids (unique).
    answers : mapping
        ``problem -> key answer``.
    seed : int
        Seed of the permutation (``numpy.random.default_rng([seed, 0xD0])``).
    n_donors : int
        Donors per base (the next ``n_donors`` qualifying problems).
    group : callable, optional
        ``group(problem) -> key``; donors must share the base's key (the
        template and token length of the aligned interchange).

    Returns
    -------
    pairs : list of (base, donor)
        In base order of ``problems``; ``donor != base`` and
        ``answers[donor] != answers[base]`` always.
    unmatched : list of str
        Bases with fewer than ``n_donors`` qualifying donors (they keep the
        donors they have).
    """
    problems = list(problems)
    if len(set(problems)) != len(problems):
        raise ValueError("duplicate problem ids")
    if n_donors < 1:
        raise ValueError(f"n_donors must be >= 1, got {n_donors}")
    order = [problems[i] for i in np.random.default_rng([int(seed), 0xD0]).permutation(len(problems))]
    pos = {p: i for i, p in enumerate(order)}
    keys = {p: (group(p) if group else None) for p in problems}
    pairs, unmatched = [], []
    n = len(order)
    for p in problems:
        got = []
        for step in range(1, n):
            q = order[(pos[p] + step) % n]
            if int(answers[q]) != int(answers[p]) and keys[q] == keys[p]:
                got.append(q)
                if len(got) == n_donors:
                    break
        if len(got) < n_donors:
            unmatched.append(p)
        pairs += [(p, q) for q in got]
    return pairs, unmatched


def heldout_split(problems: Sequence[str], *, seed: int = 0, heldout_fraction: float = 0.5) -> dict:
    """``problem -> "train" | "heldout"`` for DAS (by base problem, seeded permutation)."""
    problems = list(problems)
    order = np.random.default_rng([int(seed), 0xDA5]).permutation(len(problems))
    n_held = int(round(heldout_fraction * len(problems)))
    held = {problems[i] for i in order[:n_held]}
    return {p: ("heldout" if p in held else "train") for p in problems}


def interchange_source(alignment: str, X_src: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Source rows ``S`` (T, d) for the base's ``T`` patched positions.

    Parameters
    ----------
    alignment : {"mean", "ot", "aligned"}
    X_src : ndarray (T_src, d)
        Donor states at the site (special tokens dropped).
    H : ndarray (T, d)
        The base's clean states at the site.
    """
    from zhunt.experiments.patching import mean_source, ot_sources

    H = np.asarray(H, dtype=np.float64)
    if alignment == "mean":
        return np.broadcast_to(mean_source(X_src), H.shape).copy()
    if alignment == "ot":
        return ot_sources(X_src, H)
    if alignment == "aligned":
        X = np.asarray(X_src, dtype=np.float64)
        if X.shape != H.shape:
            raise ValueError(f"aligned donor has {X.shape} states, base {H.shape}")
        return X
    raise ValueError(f"alignment must be one of {CELL_ALIGNMENTS}, not {alignment!r}")


def extend_to_prefix(alignment: str, S: np.ndarray, H: np.ndarray, H_prefix: np.ndarray,
                     X_prefix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source and clean rows over the prompt *and* the pair's teacher-forced common prefix ``a``.

    The pair's first answer token is read after ``a`` (module
    :mod:`zhunt.experiments.patching_cells`), so ``a``'s positions belong to
    the context that is interchanged: with them left unpatched, their own
    states below the site still read the base prompt, and even the full
    interchange would not reproduce the donor run.

    Parameters
    ----------
    alignment : {"mean", "ot", "aligned"}
    S, H : ndarray (T, d)
        Source and clean base rows at the prompt's patched positions.
    H_prefix : ndarray (m, d)
        The base's clean states at the prefix's ``m`` patched positions.
    X_prefix : ndarray (m, d), optional
        The donor run's states there (same tokens at the same positions: the
        aligned donor has the base's token length); required for ``aligned``.

    Returns
    -------
    S_ext, H_ext : ndarray (T + m, d)
        ``aligned``: ``S_ext = [S; X_prefix]``, so the full interchange is the
        donor run's context exactly; ``mean`` / ``ot``: the prefix rows are
        the mean of ``S``'s rows, the rule for patched generated positions
        (:meth:`zhunt.models.generation.SubspaceEdit.generated_source`).
        ``H_ext = [H; H_prefix]``.
    """
    S, H = np.asarray(S, dtype=np.float64), np.asarray(H, dtype=np.float64)
    H_prefix = np.asarray(H_prefix, dtype=np.float64).reshape(-1, H.shape[1])
    if alignment == "aligned":
        if X_prefix is None:
            raise ValueError("an aligned prefix needs the donor run's prefix states")
        P = np.asarray(X_prefix, dtype=np.float64).reshape(-1, H.shape[1])
        if P.shape != H_prefix.shape:
            raise ValueError(f"donor prefix has {P.shape} states, base {H_prefix.shape}")
    elif alignment in ("mean", "ot"):
        P = np.broadcast_to(S.mean(axis=0), H_prefix.shape)
    else:
        raise ValueError(f"alignment must be one of {CELL_ALIGNMENTS}, not {alignment!r}")
    return np.concatenate([S, P]), np.concatenate([H, H_prefix])


def patch_norm(S: np.ndarray, H: np.ndarray, V: np.ndarray | None, scale: float = 1.0) -> float:
    """``||Δh||_F = scale ||P_V (S - H)||_F`` over the patched positions (``V=None``: ``P = I``)."""
    D = np.asarray(S, dtype=np.float64) - np.asarray(H, dtype=np.float64)
    if V is not None:  # ||P_V D||_F = ||D V^T||_F for orthonormal rows V
        D = D @ np.asarray(V, dtype=np.float64).T
    return float(scale * np.linalg.norm(D))


def matched_source(S: np.ndarray, H: np.ndarray, V_Z: np.ndarray, V_R: np.ndarray) -> tuple[np.ndarray, float]:
    """Source ``S' = H + α (S - H)`` and ``α`` of the energy-matched random patch (module docstring).

    Returns
    -------
    S_matched : ndarray (T, d)
    alpha : float
        ``||P_Z (S - H)||_F / ||P_R (S - H)||_F`` (1.0 if both are 0).
    """
    nz, nr = patch_norm(S, H, V_Z), patch_norm(S, H, V_R)
    alpha = 1.0 if nr == 0 else nz / nr
    H = np.asarray(H, dtype=np.float64)
    return H + alpha * (np.asarray(S, dtype=np.float64) - H), float(alpha)


def pair_bases(k: int, d: int, pair_index: int, seed: int = 0) -> np.ndarray:
    """The pair's Haar-random (k, d) basis: ``random_state = (seed, k, pair_index)``."""
    return random_subspace(k, d, np.random.default_rng([int(seed), int(k), int(pair_index)]))


def pair_edits(S: np.ndarray, H: np.ndarray, V_Z: np.ndarray, V_R: np.ndarray,
               V_das: np.ndarray | None = None) -> dict:
    """Every patched subspace of one pair: ``name -> (SubspaceEdit, ||Δh||_F)``.

    Parameters
    ----------
    S : (T, d) source rows, H : (T, d) base clean states, V_Z : (k, d),
    V_R : (k, d) the pair's random basis, V_das : (k, d) or None.
    """
    from zhunt.models.generation import SubspaceEdit

    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    S_m, alpha = matched_source(S, H, V_Z, V_R)
    self_src = np.asarray(H, dtype=np.float64).mean(axis=0)
    out = {
        "z": (SubspaceEdit(f32(V_Z), f32(S), "span"), patch_norm(S, H, V_Z)),
        "zperp": (SubspaceEdit(f32(V_Z), f32(S), "complement"),
                  float(np.sqrt(max(patch_norm(S, H, None) ** 2 - patch_norm(S, H, V_Z) ** 2, 0.0)))),
        "full": (SubspaceEdit(None, f32(S), "full"), patch_norm(S, H, None)),
        "random": (SubspaceEdit(f32(V_R), f32(S), "span"), patch_norm(S, H, V_R)),
        "random_matched": (SubspaceEdit(f32(V_R), f32(S_m), "span"), patch_norm(S, H, V_R, alpha)),
        "self_mean": (SubspaceEdit(f32(V_Z), f32(self_src), "span"),
                      patch_norm(np.broadcast_to(self_src, np.shape(H)), H, V_Z)),
    }
    if V_das is not None:
        out["das"] = (SubspaceEdit(f32(V_das), f32(S), "span"), patch_norm(S, H, V_das))
    return out
