"""Determinism: two clean runs of the whole tiny DAG give identical tables, stores and weights.

The first run is the session's shared ``tiny_workdir`` (conftest); the second is a fresh copy of
the workflow run from scratch (organism training included) with the same command. Compared:

* the set of files under ``results/`` (figures included, by name only);
* every TSV, cell by cell as written (text), except the wall-time columns listed in
  ``TIMING_COLUMNS`` (the ARD runs' ``seconds``);
* every HDF5 file: the same datasets with the same dtype, shape and SHA256 of their bytes, and
  the same attributes, except the wall-time attributes in ``TIMING_ATTRS`` (``created`` of the
  activation store, ``seconds`` of each ARD run group);
* every JSON file (the seed-002/004 exports), exactly;
* the trained organism's safetensors: the same tensors, bit for bit.

Not compared: Markdown reports (renderings of the TSVs; the training report holds the wall
time), PDF/PNG figures (renderings; PDFs embed a creation date), ``*.pt`` (the same tensors as
``*-grams.json`` points to), logs and benchmarks.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json

import h5py
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

TIMING_COLUMNS = {"*/ard/L*.tsv": {"seconds"}, "*/ard/summary.tsv": {"seconds"}}
TIMING_ATTRS = {"created", "seconds"}  # attribute names, on any object (see the docstring)


def _timing_columns(rel: str) -> set:
    return set().union(*[cols for pat, cols in TIMING_COLUMNS.items() if fnmatch.fnmatch(rel, pat)])


def h5_digest(path) -> dict:
    out = {}

    def add_attrs(name, obj):
        for k, v in obj.attrs.items():
            if k not in TIMING_ATTRS:
                out[f"{name}@{k}"] = repr(np.asarray(v).tolist())

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            data = obj[()]
            if data.dtype == object:
                data = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in np.ravel(data)])
            out[name] = (str(obj.dtype), obj.shape,
                         hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest())
        add_attrs(name, obj)

    with h5py.File(path, "r") as f:
        add_attrs("", f)
        f.visititems(visit)
    return out


def _files(root):
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_two_clean_runs_are_identical(tmp_path, tiny_workdir, copy_workflow, snakemake_cli):
    second = copy_workflow(tmp_path / "second")
    res = snakemake_cli(second)
    assert res.returncode == 0, res.stderr[-4000:]
    a, b = tiny_workdir / "results", second / "results"
    files = _files(a)
    assert files == _files(b)

    differ = []
    for rel in sorted(files):
        pa, pb = a / rel, b / rel
        if rel.endswith(".tsv"):
            da = pd.read_csv(pa, sep="\t", dtype=str, keep_default_na=False)
            db = pd.read_csv(pb, sep="\t", dtype=str, keep_default_na=False)
            skip = _timing_columns(rel)
            assert skip <= set(da.columns), (rel, skip)  # the exclusion list is not stale
            if not da.drop(columns=list(skip)).equals(db.drop(columns=list(skip))):
                differ.append(rel)
        elif rel.endswith(".h5"):
            ha, hb = h5_digest(pa), h5_digest(pb)
            if ha != hb:
                differ.append(f"{rel}: {sorted(k for k in ha.keys() | hb.keys() if ha.get(k) != hb.get(k))[:5]}")
        elif rel.endswith(".json"):
            if json.loads(pa.read_text()) != json.loads(pb.read_text()):
                differ.append(rel)
    assert differ == [], differ

    from safetensors.numpy import load_file

    for st in sorted((tiny_workdir / "resources/models/organism-tiny").glob("*.safetensors")):
        wa, wb = load_file(st), load_file(second / st.relative_to(tiny_workdir))
        assert wa.keys() == wb.keys()
        assert [k for k in wa if not np.array_equal(wa[k], wb[k])] == [], st.name
