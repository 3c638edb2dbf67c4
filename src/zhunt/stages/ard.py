"""Stages of Exp. C (ARD-MMD): rules ``ard_layer``, ``ard_heldout``, ``ard_summary``.

Each ``run_<rule>`` follows the contract of :mod:`zhunt.stages`: it reads the store and the
layer's mask, lets :mod:`zhunt.activations.ard` fit, and writes the tables, the run file and the
figures (:mod:`zhunt.report.ard`) at the rule's output paths. The run file (one per layer: every
run's lengthscales and trajectory) is written and read here.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from zhunt.activations import ard
from zhunt.data.store import ActivationStore
from zhunt.errors import ZhuntError
from zhunt.io import atomic_path, write_table, write_text
from zhunt.report import ard as render
from zhunt.stages.paths import figure_stem, table_paths
from zhunt.weights.masks import read_mask

__all__ = ["run_ard_layer", "run_ard_heldout", "run_ard_summary", "write_run_file", "read_run_files"]

#: The mask kind of the warm start, the rotated basis and the overlap.
MASK_KIND = "multihead"


# --------------------------------------------------------------------------- the run file
def write_run_file(out_h5, res: ard.ArdLayer) -> None:
    """Write the run file of one layer (:func:`zhunt.activations.ard.ard_layer`) atomically.

    Layout: ``{objective}/{basis}/{init}/lambda{λ:g}/lengthscale`` (d,) (standardised units),
    ``.../log_lengthscale`` (d,), ``.../init_log_lengthscale`` (d,), ``.../trajectory`` (S, d)
    log ell, ``.../trajectory_steps`` (S,), ``.../loss`` (steps,), attributes = final terms,
    steps, converged, seconds, lambda; ``basis/{basis}/{z_energy, mean, std}`` with attribute
    ``sigma0``; root attributes ``res.attrs`` — all of the primary site (the first of
    ``res.sites``); each variant site's runs and bases in the same layout under
    ``sites/{site}/`` (attributes ``site``, ``hidden_index``).
    """
    import h5py

    sites = list(res.sites)
    with atomic_path(out_h5, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for key, val in res.attrs.items():
                f.attrs[key] = val
            f.attrs["units"] = ("lengthscales in standardised units: u = (c - mean)/(std*sigma0), "
                                "log ell = 0 is the median heuristic; c = h (coord) or [V_Z; V_Z_perp] h "
                                "(rotated)")
            for site_ in sites:
                runs, prep, j = res.sites[site_]
                g0 = f if site_ == sites[0] else f.create_group(f"sites/{site_}")
                g0.attrs["site"] = site_
                g0.attrs["hidden_index"] = j
                _write_runs(g0, runs, prep)


def _write_runs(f, runs, prep) -> None:
    """One site's bases and runs into the HDF5 group ``f`` (layout in :func:`write_run_file`)."""
    for basis, (std, z) in prep.items():
        g = f.create_group(f"basis/{basis}")
        g.create_dataset("z_energy", data=z)
        g.create_dataset("mean", data=std.mean)
        g.create_dataset("std", data=std.std)
        g.attrs["sigma0"] = std.sigma0
    for r in runs:
        fit = r["fit"]
        g = f.create_group(ard.run_key(r["objective"], r["basis"], r["init"], r["lam"]))
        g.create_dataset("lengthscale", data=np.exp(fit.log_ell))
        g.create_dataset("log_lengthscale", data=fit.log_ell)
        g.create_dataset("init_log_lengthscale", data=fit.init_log_ell)
        g.create_dataset("trajectory", data=fit.trajectory)
        g.create_dataset("trajectory_steps", data=fit.trajectory_steps)
        g.create_dataset("loss", data=fit.loss)
        for k, v in fit.terms.items():
            g.attrs[k] = v
        g.attrs["steps"] = fit.steps
        g.attrs["converged"] = fit.converged
        g.attrs["seconds"] = fit.seconds
        g.attrs["lambda"] = r["lam"]


def read_run_files(h5_paths) -> dict:
    """``{(layer, objective, basis, init, lam): {"log_ell", "trajectory", "steps", "z", "loss"}}`` of the
    primary site, from run files (:func:`write_run_file`)."""
    out = {}
    for path in h5_paths:
        try:
            out.update(_read_run(path))
        except (OSError, KeyError) as exc:  # truncated, not HDF5, or missing datasets
            raise ZhuntError(str(path), f"not a complete ARD run file ({' '.join(str(exc).split())})") from None
    return out


def _read_run(path) -> dict:
    import h5py

    from zhunt.io import check_provenance, expected_provenance

    out = {}
    with h5py.File(path, "r") as f:
        check_provenance(path, f.attrs, expected_provenance("ard", path))
        layer = int(f.attrs["layer"])
        z = {b: f[f"basis/{b}/z_energy"][()] for b in f["basis"]} if "basis" in f else {}
        for obj in ard.OBJECTIVES:
            if obj not in f:
                continue
            for basis in f[obj]:
                for init in f[obj][basis]:
                    for lk in f[obj][basis][init]:
                        g = f[obj][basis][init][lk]
                        out[(layer, obj, basis, init, ard.lam_id(g.attrs["lambda"]))] = dict(
                            log_ell=g["log_lengthscale"][()], trajectory=g["trajectory"][()],
                            steps=g["trajectory_steps"][()], z=z.get(basis), loss=g["loss"][()])
    return out


# --------------------------------------------------------------------------- stages
def _mask(mask_path, k_warm: int, store) -> np.ndarray:
    """The layer's ``V_Z`` (k_warm, d), checked against the store's hidden size."""
    V_Z = read_mask(mask_path, MASK_KIND, int(k_warm))
    if V_Z.shape[1] != store.hidden_size:
        raise ZhuntError(str(mask_path), f"mask width {V_Z.shape[1]} != hidden size {store.hidden_size}")
    return V_Z


def _fit_settings(params: Mapping) -> dict:
    """The optimiser settings of the ``ard`` config block."""
    grid = params["ard"]
    return dict(lr=grid["lr"], min_steps=grid["min_steps"], max_steps=grid["max_steps"])


def run_ard_layer(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """The λ × init × objective × basis grid of layer ``wildcards["layer"]`` (outputs ``h5``, ``tsv``);
    on the CPU the runs are fitted ``threads`` at a time (``n_jobs`` of :func:`zhunt.activations.ard.ard_layer`)."""
    with ActivationStore(inputs["store"]) as store:
        V_Z = _mask(inputs["mask"], params["k_warm"], store)
        res = ard.ard_layer(store, V_Z, wildcards["model"], int(wildcards["layer"]), params["ard"]["lambdas"],
                            k_warm=params["k_warm"], kind=MASK_KIND, site=params["site"],
                            site_variants=list(params["site_variants"]), n_jobs=threads, **_fit_settings(params))
    write_run_file(outputs["h5"], res)
    write_table(res.table, outputs["tsv"])


def run_ard_heldout(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Held-out MMD tests of the primary layer's run at the middle λ (:func:`zhunt.activations.ard.middle_lambda`).

    Output ``tsv``.
    """
    with ActivationStore(inputs["store"]) as store:
        V_Z = _mask(inputs["mask"], params["k_warm"], store)
        res = ard.heldout_test(store, V_Z, params["layer"], ard.middle_lambda(params["ard"]["lambdas"]),
                               model_name=wildcards["model"], n_permutations=params["n_permutations"],
                               site=params["site"], **_fit_settings(params))
    write_table(res.table, outputs["tsv"])


def run_ard_summary(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """|Z| vs layer, spectrum, collapse and the headline (outputs ``table``, ``headline``, ``fig_*``)."""
    model, primary = wildcards["model"], params["primary"]
    per = pd.concat([pd.read_csv(p, sep="\t") for p in inputs["tsv"]], ignore_index=True)
    runs = read_run_files(list(inputs["h5"]))
    res = ard.ard_summary(per, runs, primary, model, heldout=pd.read_csv(inputs["heldout"], sep="\t"),
                          site=params["site"])
    write_table(res.headline, outputs["headline"])
    out_tsv, out_md = table_paths(outputs["table"])
    write_table(res.table, out_tsv)
    write_text(out_md, render.summary_markdown(res.table, primary, model, res.collapse, res.headline))
    render.plot_z_size(res.table, model, figure_stem(outputs["fig_size"]))
    render.plot_spectrum(runs, primary, model, figure_stem(outputs["fig_spectrum"]))
    render.plot_trajectories(runs, primary, model, figure_stem(outputs["fig_traj"]))
