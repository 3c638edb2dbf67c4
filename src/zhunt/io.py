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

from .errors import ZhuntError


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
    try:
        main(smk)
    except ZhuntError as exc:
        logging.getLogger("zhunt").error("%s", exc)
        print(f"zhunt error: {exc}", file=sys.stderr)
        sys.exit(1)
