"""Stage of Exp. B: rule ``decomposition`` (:mod:`zhunt.activations.decomposition`)."""

from __future__ import annotations

from zhunt.activations import decomposition

__all__ = ["run_decomposition"]


def run_decomposition(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """R(l) per layer, language and k with the primary layer's Z (outputs ``table``, ``fig``)."""
    decomposition.run_decomposition(inputs["store"], inputs["mask"], wildcards["model"], list(params["ks"]),
                                    n_random=params["n_random"], out_tsv=outputs["table"][0],
                                    out_md=outputs["table"][1], fig_stem=outputs["fig"][0], site=params["site"])
