"""The last stage of the older layout: :func:`build_layer_masks` (rule build_masks), which moves to
:mod:`zhunt.stages.weights`; the other stages live in :mod:`zhunt.stages.models`,
:mod:`zhunt.stages.data` and :mod:`zhunt.stages.summary`, the layer/k checks in :mod:`zhunt.config`.
"""

from __future__ import annotations

import logging
import time

from zhunt import __version__
from zhunt.config import check_ks, check_layer

log = logging.getLogger("zhunt.stages.pipeline")


def build_layer_masks(model_dir, model_name: str, layer: int, ks, kinds, out_path) -> None:
    """Compute and write the Z-masks of one decoder layer (see :mod:`zhunt.weights.masks`)."""
    from zhunt.weights.masks import write_masks, z_masks
    from zhunt.models import get_adapter, load_model
    from zhunt.models.loader import weights_sha256

    t0 = time.perf_counter()
    model, _ = load_model(model_dir, device="cpu", dtype="float32")
    ad = get_adapter(model)
    check_layer(layer, ad.num_layers, model_name)
    check_ks(ks, ad.hidden_size, model_name, ad.head_dim if "head0" in kinds else None)
    masks = z_masks(ad.layer_weights(layer), ks=ks, kinds=kinds)
    write_masks(out_path, masks, {
        "model": model_name, "layer": layer, "ks": list(ks), "kinds": list(kinds),
        "model_weights_sha256": weights_sha256(model_dir),
        "hidden_size": ad.hidden_size, "num_heads": ad.num_heads, "head_dim": ad.head_dim,
        "zhunt_version": __version__,
    })
    log.info("masks for %s L%d (k=%s, %s) in %.2fs", model_name, layer, list(ks), list(kinds),
             time.perf_counter() - t0)
