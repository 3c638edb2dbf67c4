"""Fault injection: ``kill -9`` the activation extraction mid-write, rerun, same store.

The extraction job of a copy of the session's tiny run (conftest ``clone_tiny``, its store
deleted) is started through the Snakemake CLI in its own process group. The copy's glue script
``workflow/scripts/extract_activations.py`` gets a few lines that, only when
``ZHUNT_TEST_PAUSE_MARKER`` is set, make :class:`zhunt.data.store.StoreWriter` stop right after its
first batch is written and flushed to the temporary HDF5 file (the writer buffers rows, so the
hook calls ``StoreWriter.flush``; then it writes the marker file and
sleeps), so the kill lands mid-write deterministically instead of racing a sub-second job. Then
the whole process group (Snakemake and the job) gets SIGKILL. Asserted:

* at the kill: the temporary ``.organism.h5.*.h5.tmp`` of :func:`zhunt.io.atomic_path` holds
  data and the final path does not exist; after the kill it still does not;
* ``snakemake --unlock`` then the same command reruns the job and succeeds;
* the final store equals the uninterrupted run's (the session's tiny run): same datasets with
  the same SHA256 of their bytes, same attributes except ``created``; the killed run's
  temporary is gone (``atomic_path`` removes a dead writer's leftovers of the same path).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

STORE = "results/organism-tiny/activations/organism.h5"
PAUSE_HOOK = r'''
# --- test hook (tests/test_fault_injection.py): pause the store writer mid-write ---
import os as _os
if _os.environ.get("ZHUNT_TEST_PAUSE_MARKER"):
    import time as _time
    from zhunt.data.store import StoreWriter as _StoreWriter

    _append = _StoreWriter.append

    def _append_then_pause(self, *args, **kwargs):
        _append(self, *args, **kwargs)
        self.flush()  # the writer buffers rows: write them and flush HDF5 to the temporary file
        marker = _os.environ["ZHUNT_TEST_PAUSE_MARKER"]
        with open(marker + ".part", "w") as fh:
            fh.write(f"{self.tmp_path}\n{_os.getpid()}\n")
        _os.replace(marker + ".part", marker)  # the test never reads a half-written marker
        _time.sleep(3600)

    _StoreWriter.append = _append_then_pause
# --- end of test hook ---
'''


def store_digest(path) -> dict:
    """{dataset name: sha256 of its bytes + dtype + shape} and {attribute: value} of an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                if data.dtype == object:  # variable-length strings
                    data = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in data.ravel()])
                h = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
                out[name] = (str(obj.dtype), obj.shape, h)
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = repr(v)
        f.visititems(visit)
        for k, v in f.attrs.items():
            out[f"/@{k}"] = repr(v)
    return out


def _wait_for(predicate, timeout, proc, what):
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"snakemake exited ({proc.returncode}) before {what}:\n"
                        f"{Path(proc.args_log).read_text()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _live_members(pgid) -> list[int]:
    """Pids of the process group's members that are still running (zombies count as dead)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
def test_kill_9_during_extraction_then_rerun(tmp_path, clone_tiny, tiny_workdir, snakemake_cli):
    wd = clone_tiny(tmp_path / "wd")
    (wd / STORE).unlink()
    script = wd / "workflow/scripts/extract_activations.py"
    text = script.read_text()
    head, sep, tail = text.partition("\nfrom zhunt.stages import")
    assert sep, f"{script}: the test hook goes before the stage import"
    script.write_text(head + PAUSE_HOOK + sep + tail)
    marker = tmp_path / "writing"
    store, store_dir = wd / STORE, (wd / STORE).parent

    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", STORE,
           "--configfile", "tests/tiny/config.yaml"]
    log = open(tmp_path / "killed_run.log", "w")  # a file, not a pipe: nothing can block on it
    proc = subprocess.Popen(cmd, cwd=wd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "ZHUNT_TEST_PAUSE_MARKER": str(marker)})
    proc.args_log = log.name
    try:
        _wait_for(marker.exists, 300, proc, "the extraction job wrote its first batch")
        tmp, job_pid = marker.read_text().split("\n")[:2]
        tmp, job_pid = Path(tmp), int(job_pid)
        assert tmp.parent == store_dir and tmp.name.startswith(".organism.h5.") and tmp.name.endswith(".h5.tmp")
        assert tmp.stat().st_size > 0 and not store.exists()
        assert os.getpgid(job_pid) == proc.pid  # the job is in the group that gets the SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already if the run failed early
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        log.close()
    t0 = time.monotonic()
    while _live_members(proc.pid) and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    assert not _live_members(proc.pid), "a process survived SIGKILL of the process group"
    assert not store.exists(), "a partial store appeared at the final path"
    assert tmp.exists()  # kill -9 leaves the temporary behind (nothing can clean up)

    unlock = snakemake_cli(wd, "--unlock", timeout=120)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    res = snakemake_cli(wd, STORE, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "extract_activations" in res.stderr  # the job was redone
    assert not tmp.exists() and not [p.name for p in store_dir.iterdir() if p.name.startswith(".")]

    got, want = store_digest(store), store_digest(tiny_workdir / STORE)
    for d in (got, want):
        d.pop("/@created")
    assert got.keys() == want.keys()
    assert {k for k in got if got[k] != want[k]} == set()


def test_atomic_path_removes_a_killed_writers_leftovers(tmp_path):
    from zhunt.io import atomic_path, write_text

    stale = tmp_path / ".a.h5.k1ll3d_x.h5.tmp"  # what mkstemp names a temporary of a.h5
    keep = [tmp_path / ".a.h5.notmine.h5.tmp",  # not tempfile's 8 characters
            tmp_path / ".b.h5.k1ll3d_x.h5.tmp",  # another output's
            tmp_path / ".a.h5.k1ll3d_x.tmp"]  # another suffix
    for p in [stale, *keep]:
        p.write_text("partial")
    with atomic_path(tmp_path / "a.h5", suffix=".h5.tmp") as tmp:
        assert not stale.exists()
        tmp.write_text("complete")
    assert (tmp_path / "a.h5").read_text() == "complete"
    assert all(p.exists() for p in keep)
    write_text(tmp_path / "a.h5", "again")  # suffix .tmp: now the third one is a leftover of a.h5
    assert not keep[2].exists() and keep[0].exists() and keep[1].exists()
