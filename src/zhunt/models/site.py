"""The site convention: which residual stream "layer l" means.

Z of layer ``l`` is built from layer ``l``'s attention kernel (:mod:`zhunt.weights.masks`),
and that kernel reads the residual stream *entering* layer ``l``. So every
Z-based analysis acts, by default, on that stream:

============  ===================  ==========================================
site          hidden index ``j``   hook that sees / edits it
============  ===================  ==========================================
``input``     ``j = l``            forward **pre**-hook on ``layers[l]``
``output``    ``j = l + 1``        forward hook on ``layers[l]`` (its output)
============  ===================  ==========================================

Hidden index ``j`` is the activation store's key (``hidden/{j:03d}``): ``j = 0``
is the embedding output, ``j = l + 1`` the raw output of decoder layer ``l``.
``output`` is the sensitivity variant (the stream layer ``l + 1``, with its own
Z, reads). The config key is ``study.site`` (default ``input``), and
``study.site_variants`` lists extra sites a model is also analysed at. Every
table of a Z-based analysis carries ``site`` and ``hidden_index`` columns.
"""

from __future__ import annotations

__all__ = ["SITES", "DEFAULT_SITE", "hidden_index", "check_site", "study_layers", "store_hidden_indices"]

#: The two sites, primary first.
SITES = ("input", "output")
#: The default site (``study.site``).
DEFAULT_SITE = "input"


def check_site(site: str) -> str:
    """Return ``site`` if it is one of :data:`SITES`, else raise ``ValueError``."""
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, not {site!r}")
    return site


def hidden_index(layer: int, site: str = DEFAULT_SITE) -> int:
    """Activation-store hidden index of decoder layer ``layer`` at ``site``.

    Parameters
    ----------
    layer : int
        Decoder layer ``l`` (0-based).
    site : {"input", "output"}
        ``input``: the stream entering layer ``l`` (``j = l``); ``output``: its
        raw output (``j = l + 1``).

    Returns
    -------
    int
        ``j``.
    """
    layer = int(layer)
    if layer < 0:
        raise ValueError(f"layer must be >= 0, got {layer}")
    return layer if check_site(site) == "input" else layer + 1


def study_layers(study: dict) -> list:
    """Every decoder layer a store-reading stage is configured at (primary, secondary, Phase 2, ARD)."""
    return [study["primary_layer"], study["secondary_layer"], *study["phase2_layers"], *study["ard"]["layers"]]


def store_hidden_indices(setting, layers: list, num_layers: int) -> list[int] | None:
    """Hidden indices whose token rows the activation store keeps (config ``extraction.layers``).

    Parameters
    ----------
    setting : "all", "study" or list of int
        ``all``: every index (returns None). ``study``: index 0 plus both sites
        (:func:`hidden_index` at ``input`` and ``output``: ``l`` and ``l + 1``)
        of every configured layer (:func:`study_layers`), so the token-level
        stages (Phase 2, data-driven Z, patching sources, ARD, the bridge) read
        the store at either site convention and any ``study.site_variants``.
        A list: those hidden indices (``0..L``), plus 0. The all-layer stages
        (Exp. B, seed-003 tests) read only pooled vectors, which the store
        keeps for every index (:mod:`zhunt.data.store`).
    layers : list
        The configured decoder layers, :func:`study_layers` of the model's
        study parameters (used by ``study`` only).
    num_layers : int
        ``L`` (hidden indices run over ``0..L``).

    Returns
    -------
    list of int or None
        Sorted indices, or None for all.

    Raises
    ------
    ZhuntError
        ``extraction.layers`` for an index outside ``0..L``, an unknown
        setting, or ``study`` with an ``auto`` layer (known only after the
        structure stage).
    """
    from zhunt.errors import ZhuntError

    if setting == "all":
        return None
    if setting == "study":
        if any(l == "auto" for l in layers):
            raise ZhuntError("extraction.layers", "`study` needs integer layers, but a study layer is `auto` "
                             "(known only after the structure stage); list the hidden indices or use `all`")
        wanted = {0} | {hidden_index(l, s) for l in layers for s in SITES}
    elif isinstance(setting, (list, tuple)):
        wanted = {0} | {int(j) for j in setting}
    else:
        raise ZhuntError("extraction.layers", f"expected all, study or a list of hidden indices, got {setting!r}")
    bad = sorted(j for j in wanted if not 0 <= j <= num_layers)
    if bad:
        raise ZhuntError("extraction.layers", f"hidden index {bad[0]} outside 0..{num_layers}")
    return sorted(wanted)
