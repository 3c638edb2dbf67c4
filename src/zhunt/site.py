"""The site convention: which residual stream "layer l" means.

Z of layer ``l`` is built from layer ``l``'s attention kernel (:mod:`zhunt.masks`),
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

__all__ = ["SITES", "DEFAULT_SITE", "hidden_index", "check_site"]

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
