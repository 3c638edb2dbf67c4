"""Atomic file writes and the error boundary of workflow scripts.

Nothing under ``results/`` may ever be half-written: every writer here writes
to a temporary name in the destination directory and renames it into place
(``os.replace`` is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from zhunt.errors import ZhuntError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(path: Path, suffix: str) -> None:
    """Delete temporaries of ``path`` that a killed writer left behind (``kill -9`` skips cleanup).

    Only names :func:`atomic_path` itself makes for this very ``path`` are matched
    (``.{name}.`` + tempfile's 8 random characters + ``suffix``); a workflow runs one job per
    output, so such a file is never another live writer's.
    """
    stale = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")
    for p in path.parent.glob(f".{glob.escape(path.name)}.*"):
        if stale.fullmatch(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file (or directory) is removed and ``path``
    is left untouched. Temporaries of ``path`` left by a killed earlier writer are
    removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix or ".tmp"
    _remove_stale_temporaries(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; rename it onto ``path`` on success."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_table(df, path: str | os.PathLike, markdown: str | os.PathLike | None = None,
                float_format: str = "%.6g") -> None:
    """Atomically write a pandas DataFrame as TSV (and optionally Markdown)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format=float_format)
    if markdown is not None:
        write_text(markdown, df.to_markdown(index=False, floatfmt=".4g") + "\n")


# --------------------------------------------------------------------------- provenance
# What a rule expects of the artifacts it reads. A rule declares it as `params: provenance=...`
# (workflow/rules/common.smk: provenance()); snakemake_main() installs it for the job, and every
# artifact reader (ActivationStore, read_mask, the ARD run reader) checks the file's attributes
# against it, so a stale or copied file stops the job with one line instead of being used.

_RULE_PROVENANCE: dict | None = None
_SEEN_WEIGHTS: dict[str, str] = {}


def _plain(v):
    """An HDF5 attribute value as a plain Python value (numpy scalar -> item, bytes -> str)."""
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        v = v.item()
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if hasattr(v, "tolist"):
        v = v.tolist()
    return v


def check_provenance(path, attrs, expected) -> None:
    """Stop unless every expected attribute of an artifact has the expected value.

    Parameters
    ----------
    path : path
        The artifact (named in the message).
    attrs : mapping
        Its attributes as written (HDF5 root attributes).
    expected : mapping or None
        ``{attribute: value}``; ``None`` values (unknown expectations) are skipped.
        ``model_weights_sha256`` is also checked across files: every artifact one job reads
        must come from the same weights.

    Raises
    ------
    ZhuntError
        ``path: attribute 'layer' is 3, expected 2 (...)``.
    """
    for key, want in (expected or {}).items():
        if want is None:
            continue
        found = _plain(attrs[key]) if key in attrs else None
        if found is None or found != _plain(want):
            shown = "missing" if found is None else repr(found)
            raise ZhuntError(str(path), f"provenance attribute '{key}' is {shown}, expected {_plain(want)!r} "
                                        "(a stale or copied file: delete it and rerun the rule that makes it)")
    sha = _plain(attrs["model_weights_sha256"]) if "model_weights_sha256" in attrs else None
    if sha and _RULE_PROVENANCE is not None:
        for other, other_sha in _SEEN_WEIGHTS.items():
            if other_sha != sha and other != str(path):
                raise ZhuntError(str(path), f"provenance attribute 'model_weights_sha256' is {sha[:12]}..., but "
                                            f"{other} (read by the same job) has {other_sha[:12]}...: the two "
                                            "come from different weights (rebuild the stale one)")
        _SEEN_WEIGHTS[str(path)] = sha


def expected_provenance(kind: str, path) -> dict | None:
    """What the running rule expects of the artifact ``path`` of ``kind`` (``store``, ``mask``, ``ard``).

    ``None`` outside a workflow job (library use, tests) or when the rule declares nothing.
    A ``store`` must name the rule's model and template and hold the SHA256 of the prompt file the
    rule uses now; a ``mask`` or ``ard`` file the model and the layer the rule reads it for.
    """
    spec = _RULE_PROVENANCE
    if not spec:
        return None
    out = {"model": spec.get("model")}
    if kind == "store":
        from zhunt.data.store import FORMAT_VERSION

        out["format_version"] = FORMAT_VERSION
        out["template"] = spec.get("template")
        if spec.get("prompt_file"):
            from zhunt.data.prompts import file_sha256

            out["prompt_file_sha256"] = file_sha256(spec["prompt_file"])
        return out
    if kind == "mask":
        from zhunt.weights.masks import MASK_FORMAT, MASK_FORMAT_VERSION

        out.update(format=MASK_FORMAT, format_version=MASK_FORMAT_VERSION)
    layers = spec.get("layers", {})
    out["layer"] = layers.get(os.path.normpath(str(path)))
    return out


@contextlib.contextmanager
def rule_provenance(spec: dict | None) -> Iterator[None]:
    """Install a rule's provenance expectations (see :func:`expected_provenance`) for a block."""
    global _RULE_PROVENANCE
    old, _RULE_PROVENANCE = _RULE_PROVENANCE, dict(spec) if spec else None
    _SEEN_WEIGHTS.clear()
    try:
        yield
    finally:
        _RULE_PROVENANCE = old
        _SEEN_WEIGHTS.clear()


def run_main(main: Callable[[], None]) -> None:
    """Run ``main``; turn a :class:`ZhuntError` into one stderr line and exit 1."""
    try:
        main()
    except ZhuntError as exc:
        print(f"zhunt error: {exc}", file=sys.stderr)
        sys.exit(1)


def snakemake_main(smk, main: Callable[[object], None]) -> None:
    """Entry point of a workflow script: log to the rule's log, one-line user errors.

    ``main(smk)`` runs with Python logging sent to ``smk.log[0]``.
    A :class:`ZhuntError` is written as one line to the log and to stderr and
    the process exits with status 1, so Snakemake marks the job failed and
    removes its (never partial, see :func:`atomic_path`) outputs.
    """
    import logging

    if getattr(smk, "log", None):
        Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(smk.log[0], mode="w", encoding="utf-8")]
    else:
        handlers = [logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = getattr(smk, "params", None)
    spec = params.get("provenance") if hasattr(params, "get") else None
    try:
        with rule_provenance(spec):
            main(smk)
    except ZhuntError as exc:
        logging.getLogger("zhunt").error("%s", exc)
        print(f"zhunt error: {exc}", file=sys.stderr)
        sys.exit(1)
