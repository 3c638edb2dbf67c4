"""The HDF5 activation store: every hidden state of every prompt token.

One file per (model, prompt set): ``results/{model}/activations/{promptset}.h5``.

Layout
------
``hidden/000 .. hidden/{L:03d}``
    One dataset per hidden-state index ``j`` in ``0..L``, shape
    ``(N_rows, d)``, float32 (default) or float16. ``j = 0`` is the embedding
    output as the first decoder layer receives it; ``j = l + 1`` is the *raw*
    output of decoder layer ``l`` (never the final norm). Rows are all
    non-pad tokens of all prompts, concatenated in prompt order (the order of
    ``index/*``). Chunks are ``(rows_per_chunk, d)`` — whole rows, about 1 MiB
    each — so a prompt's tokens or a whole layer are read in one call.
``index/prompt_id``, ``index/lang`` (vlen str), ``index/offset``, ``index/length`` (int64)
    One entry per prompt: its rows are ``offset : offset + length``.
    ``(prompt_id, lang)`` is unique.
``index/answer``, ``index/category`` (vlen str, optional)
    Copied from the prompt table when present ("" for missing values).
``index/token_ids`` (int32), ``index/special`` (bool)
    One entry per row: the token id and whether it is a special token
    (BOS/EOS/any id in the tokenizer's ``all_special_ids``).
Root attributes
    ``format`` (``"zhunt-activations"``), ``format_version``, ``num_layers``,
    ``hidden_size``, ``dtype``, ``n_rows``, ``n_prompts``, ``zhunt_version``,
    ``hidden_state_convention``, ``created`` (UTC ISO time; the only
    non-deterministic value — compare dataset checksums, not file bytes), and
    whatever the caller passes (model name, source, revision, prompt-file
    SHA256, ...).

The writer streams batches into pre-sized datasets under a temporary name and
renames the file into place only when every row has been written; a file at
the final path is therefore always complete. Appended rows are held in a
bounded in-memory buffer (``buffer_bytes``, 32 MiB by default) and written in
file order, one HDF5 write per dataset per run of adjacent rows in the buffer,
so that small prompts arriving out of file order (length-sorted batches) do
not cost one write per prompt per dataset when the buffer holds their
neighbours; the buffer never holds more than ``max(buffer_bytes, one
append)`` bytes of rows, whatever the number of prompts.
"""

from __future__ import annotations

import datetime as _dt
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Sequence

import h5py
import numpy as np
import pandas as pd

from . import __version__
from .errors import ZhuntError
from .io import atomic_path, check_provenance, expected_provenance

__all__ = ["StoreWriter", "ActivationStore", "HIDDEN_STATE_CONVENTION", "hidden_name", "chunk_rows"]

FORMAT = "zhunt-activations"
FORMAT_VERSION = 1
HIDDEN_STATE_CONVENTION = (
    "hidden/{j:03d} for j=0..L: j=0 is the input of decoder layer 0 (embedding output incl. any "
    "model-internal scaling); j=l+1 is the raw output of decoder layer l (before any final norm)"
)
_DTYPES = {"float32": np.float32, "float16": np.float16}
_CHUNK_BYTES = 2 ** 20
_BUFFER_BYTES = 32 * 2 ** 20
_STR = h5py.string_dtype("utf-8")


def hidden_name(j: int) -> str:
    """Dataset name of hidden-state index ``j`` (``hidden/007``)."""
    return f"hidden/{j:03d}"


def chunk_rows(n_rows: int, hidden_size: int, itemsize: int) -> int:
    """Rows per chunk: about 1 MiB of whole rows, at least 1, at most ``n_rows``."""
    return max(1, min(n_rows, _CHUNK_BYTES // (hidden_size * itemsize)))


def _attr_value(v):
    if v is None:
        return ""
    if isinstance(v, (Path,)):
        return str(v)
    return v


# =========================================================================== writer
class StoreWriter:
    """Stream hidden states into a new activation store, atomically.

    Use as a context manager::

        with StoreWriter(path, num_layers=L, hidden_size=d, n_rows_total=N) as w:
            for batch in ...:
                w.append(meta, hidden, token_ids, special)
        # renamed into place here; on an exception the temp file is removed

    Parameters
    ----------
    path : str or os.PathLike
        Final path; the file is written to a hidden temporary name in the same
        directory and renamed onto ``path`` by :meth:`close`.
    num_layers : int
        ``L``, the number of decoder layers (``L + 1`` hidden datasets).
    hidden_size : int
        ``d``.
    n_rows_total : int
        Total number of token rows that will be written (the sum of all prompt
        lengths); datasets are allocated at this size, never resized.
    dtype : {"float32", "float16"}
        Storage dtype of the hidden states.
    attrs : mapping, optional
        Extra root attributes (model name, source, revision, prompt SHA256, ...).
        ``None`` values are stored as "".
    buffer_bytes : int
        Flush threshold of the row buffer, in bytes of stored rows (hidden
        states in the storage dtype plus token ids and flags). Appended rows
        are kept in memory until the next append would take the buffer past
        this size, a single append reaches it, :meth:`flush` or :meth:`close`;
        a flush sorts the buffered prompts by file offset and writes each
        maximal run of adjacent rows with one HDF5 call per dataset, so
        prompts that are neighbours in the file but arrived in different
        appends share one write. ``0`` writes every append at once. The
        buffer is bounded by ``max(buffer_bytes, the largest single
        append)``, plus, during a flush, one dataset's share of it (a run
        gathered from several appends); it changes neither the file's layout
        nor its contents.
    """

    def __init__(self, path, *, num_layers: int, hidden_size: int, n_rows_total: int,
                 dtype: str = "float32", attrs: Mapping | None = None,
                 buffer_bytes: int = _BUFFER_BYTES):
        if dtype not in _DTYPES:
            raise ZhuntError("dtype", f"activation dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
        if n_rows_total < 1:
            raise ValueError("n_rows_total must be >= 1")
        self.path = Path(path)
        self.num_layers = int(num_layers)
        self.hidden_size = int(hidden_size)
        self.n_rows_total = int(n_rows_total)
        self.dtype = dtype
        self._np_dtype = np.dtype(_DTYPES[dtype])
        self._cursor = 0
        self._meta: list[dict] = []
        self.buffer_bytes = max(0, int(buffer_bytes))
        # appended but not yet written: (offsets, lengths, hidden arrays, token ids, flags) per append
        self._pending: list[tuple] = []
        self._pending_bytes = 0
        self._row_bytes = (self.num_layers + 1) * self.hidden_size * self._np_dtype.itemsize + 5
        self._closed = False
        self._atomic = atomic_path(self.path, suffix=".h5.tmp")
        self.tmp_path: Path = self._atomic.__enter__()
        try:
            rows = chunk_rows(self.n_rows_total, self.hidden_size, self._np_dtype.itemsize)
            chunk_bytes = rows * self.hidden_size * self._np_dtype.itemsize
            # a few chunks of cache per dataset: writes arrive out of row order
            # (length-sorted batches) and partial chunks should stay in memory
            self._f = h5py.File(self.tmp_path, "w", rdcc_nbytes=4 * chunk_bytes + 1024, rdcc_nslots=521)
            g = self._f.create_group("hidden")
            self._dsets = [
                g.create_dataset(f"{j:03d}", shape=(self.n_rows_total, self.hidden_size),
                                 dtype=self._np_dtype, chunks=(rows, self.hidden_size))
                for j in range(self.num_layers + 1)
            ]
            ix = self._f.create_group("index")
            self._tok = ix.create_dataset("token_ids", shape=(self.n_rows_total,), dtype=np.int32)
            self._special = ix.create_dataset("special", shape=(self.n_rows_total,), dtype=bool)
            a = self._f.attrs
            for k, v in (attrs or {}).items():
                a[k] = _attr_value(v)
            a["format"] = FORMAT
            a["format_version"] = FORMAT_VERSION
            a["num_layers"] = self.num_layers
            a["hidden_size"] = self.hidden_size
            a["dtype"] = dtype
            a["n_rows"] = self.n_rows_total
            a["zhunt_version"] = __version__
            a["hidden_state_convention"] = HIDDEN_STATE_CONVENTION
            a["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        except BaseException as exc:
            self._abort(exc)
            raise

    # ------------------------------------------------------------------ api
    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._abort(exc)
        return False

    @property
    def rows_written(self) -> int:
        """Number of token rows appended so far (in the file or still in the buffer)."""
        return sum(m["length"] for m in self._meta)

    @property
    def rows_buffered(self) -> int:
        """Number of appended token rows not yet written to the file."""
        return sum(int(p[1].sum()) for p in self._pending)

    def append(self, meta, hidden: Sequence[np.ndarray], token_ids: np.ndarray,
               special: np.ndarray, *, offsets: Sequence[int] | None = None,
               copy: bool = True) -> None:
        """Add the tokens of a batch of prompts (buffered; see ``buffer_bytes``).

        Parameters
        ----------
        meta : pandas.DataFrame or sequence of dict
            One entry per prompt with ``prompt_id`` (or ``id``), ``lang``,
            ``length`` (number of rows) and optionally ``answer``, ``category``.
        hidden : sequence of np.ndarray
            ``L + 1`` arrays, ``hidden[j]`` of shape ``(n, d)`` with
            ``n = sum(length)``: the prompts' rows concatenated in ``meta`` order.
        token_ids : np.ndarray
            ``(n,)`` integer token ids.
        special : np.ndarray
            ``(n,)`` bool, True for special tokens.
        offsets : sequence of int, optional
            Row offset in the file of each prompt of ``meta``. Default: the
            prompts are appended after the previously written rows. Give
            offsets to write prompts out of file order (e.g. length-sorted
            batches written into the original prompt order); every row must
            end up written exactly once.
        copy : bool
            Copy the arrays into the buffer (default). ``False`` lets the
            writer keep references to ``hidden`` arrays that already have the
            storage dtype until they are written (at the next flush): the
            caller must then not modify them afterwards. Saves one copy of
            every row when the caller hands over freshly made arrays.

        Raises
        ------
        ValueError
            Shapes that do not match ``meta``, rows beyond the pre-sized
            store, or (when the buffer is flushed) buffered prompts whose rows
            overlap.
        """
        if self._closed:
            raise RuntimeError("StoreWriter is closed")
        try:
            records = _records(meta)
            if not records:
                return
            lengths = np.array([r["length"] for r in records], dtype=np.int64)
            n = int(lengths.sum())
            if len(hidden) != self.num_layers + 1:
                raise ValueError(f"expected {self.num_layers + 1} hidden arrays, got {len(hidden)}")
            token_ids = np.asarray(token_ids)
            special = np.asarray(special, dtype=bool)
            if token_ids.shape != (n,) or special.shape != (n,):
                raise ValueError(f"token_ids/special must have shape ({n},)")
            for j, h in enumerate(hidden):
                if tuple(np.shape(h)) != (n, self.hidden_size):
                    raise ValueError(
                        f"hidden[{j}] has shape {tuple(np.shape(h))}, expected {(n, self.hidden_size)}")
            if offsets is None:
                offs = self._cursor + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            else:
                offs = np.asarray(offsets, dtype=np.int64)
                if offs.shape != lengths.shape:
                    raise ValueError("offsets must have one entry per prompt")
            if len(offs) and (offs.min() < 0 or (offs + lengths).max() > self.n_rows_total):
                raise ValueError(f"rows beyond the pre-sized store of {self.n_rows_total} rows")
            nbytes = n * self._row_bytes
            if self._pending and self._pending_bytes + nbytes > self.buffer_bytes:
                self._flush_pending()
            rows = [np.asarray(h).astype(self._np_dtype, order="C", copy=copy) for h in hidden]
            self._pending.append((offs.copy(), lengths, rows, token_ids.astype(np.int32),
                                  np.array(special, dtype=bool)))
            self._pending_bytes += nbytes
            if self._pending_bytes >= self.buffer_bytes:
                self._flush_pending()
            for r, o in zip(records, offs):
                r["offset"] = int(o)
                self._meta.append(r)
            if offsets is None:
                self._cursor += n
        except BaseException as exc:
            self._abort(exc)
            raise

    def flush(self) -> None:
        """Write the buffered rows and flush HDF5's buffers to the temporary file.

        The file stays under its temporary name (it only moves into place in
        :meth:`close`). Not needed in normal use: appends flush the buffer
        when it is full and :meth:`close` flushes what is left.
        """
        if self._closed:
            raise RuntimeError("StoreWriter is closed")
        try:
            self._flush_pending()
            self._f.flush()
        except BaseException as exc:
            self._abort(exc)
            raise

    def _flush_pending(self) -> None:
        """Write every buffered row, one HDF5 write per contiguous run of rows per dataset.

        The buffered prompts are sorted by file offset and merged into maximal
        runs of adjacent rows; each run is written to every dataset with one
        simple (rectangular) selection through h5py's low-level API. A run
        made of several appends' rows is first gathered into one array (a
        copy of that run only, one dataset at a time). Unions of row ranges
        in one HDF5 call are deliberately not used: on chunked datasets HDF5
        writes such irregular selections 6-15x slower than the same rows as
        separate rectangular writes (16 prompts of Gemma-3-270M's shape: 9.9
        ms as one union, 0.64 ms as 16 low-level writes, 1.5 ms as 16 h5py
        ``Dataset.__setitem__`` calls).

        Raises
        ------
        ValueError
            If two buffered prompts share rows.
        """
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        offs = np.concatenate([p[0] for p in pending])
        lens = np.concatenate([p[1] for p in pending])
        which = np.concatenate([np.full(len(p[0]), k, dtype=np.int64) for k, p in enumerate(pending)])
        src = np.concatenate([np.concatenate([[0], np.cumsum(p[1])[:-1]]) for p in pending]).astype(np.int64)
        keep = lens > 0
        offs, lens, which, src = offs[keep], lens[keep], which[keep], src[keep]
        if not len(offs):
            return
        order = np.argsort(offs, kind="stable")
        offs, lens, which, src = offs[order], lens[order], which[order], src[order]
        ends = offs + lens
        clash = np.flatnonzero(ends[:-1] > offs[1:])
        if len(clash):
            i = int(clash[0])
            raise ValueError(f"rows {int(offs[i + 1])}..{int(min(ends[i], ends[i + 1])) - 1} written more than "
                             f"once (prompts must tile 0..{self.n_rows_total} exactly once)")
        # pieces: maximal spans adjacent both in the file and in one appended array;
        # runs: maximal spans adjacent in the file (one or more pieces)
        gap = offs[1:] != ends[:-1]
        cut = np.flatnonzero(gap | (which[1:] != which[:-1]) | (src[1:] != src[:-1] + lens[:-1])) + 1
        first = np.concatenate([[0], cut])
        piece_len = np.add.reduceat(lens, first)
        pieces = list(zip(offs[first].tolist(), piece_len.tolist(), which[first].tolist(), src[first].tolist()))
        runs: list[list[tuple]] = []
        for piece in pieces:
            if runs and runs[-1][-1][0] + runs[-1][-1][1] == piece[0]:
                runs[-1].append(piece)
            else:
                runs.append([piece])

        def rows_of(run, get):
            if len(run) == 1:
                _, m, k, a = run[0]
                return np.ascontiguousarray(get(pending[k])[a:a + m])
            return np.concatenate([get(pending[k])[a:a + m] for _, m, k, a in run], axis=0)

        d = self.hidden_size
        fsel2 = self._dsets[0].id.get_space()  # every hidden dataset has this shape
        fsel1 = self._tok.id.get_space()
        for run in runs:
            o = run[0][0]
            m = sum(p[1] for p in run)
            fsel2.select_hyperslab((o, 0), (m, d))
            fsel1.select_hyperslab((o,), (m,))
            msel2 = h5py.h5s.create_simple((m, d))
            msel1 = h5py.h5s.create_simple((m,))
            for j, ds in enumerate(self._dsets):
                ds.id.write(msel2, fsel2, rows_of(run, lambda p: p[2][j]))
            self._tok.id.write(msel1, fsel1, rows_of(run, lambda p: p[3]))
            self._special.id.write(msel1, fsel1, rows_of(run, lambda p: p[4]))

    def close(self) -> None:
        """Write the buffered rows and the index, check completeness and rename the file into place.

        Raises
        ------
        ValueError
            If the written prompts do not cover every row exactly once or a
            ``(prompt_id, lang)`` pair repeats; the temporary file is removed.
        """
        if self._closed:
            return
        try:
            meta = sorted(self._meta, key=lambda r: r["offset"])
            offs = np.array([r["offset"] for r in meta], dtype=np.int64)
            lens = np.array([r["length"] for r in meta], dtype=np.int64)
            ends = offs + lens
            expect = np.concatenate([[0], ends[:-1]]) if len(meta) else np.zeros(0, np.int64)
            if (not len(meta) or not np.array_equal(offs, expect)
                    or int(ends[-1]) != self.n_rows_total):
                raise ValueError(
                    f"incomplete activation store: prompts cover {int(lens.sum())} rows "
                    f"(must tile 0..{self.n_rows_total} exactly once)")
            keys = [(r["prompt_id"], r["lang"]) for r in meta]
            if len(set(keys)) != len(keys):
                dup = next(k for k in keys if keys.count(k) > 1)
                raise ValueError(f"duplicate (prompt_id, lang) in activation store: {dup}")
            self._flush_pending()
            ix = self._f["index"]
            ix.create_dataset("prompt_id", data=np.array([r["prompt_id"] for r in meta], dtype=object), dtype=_STR)
            ix.create_dataset("lang", data=np.array([r["lang"] for r in meta], dtype=object), dtype=_STR)
            ix.create_dataset("offset", data=offs)
            ix.create_dataset("length", data=lens)
            for col in ("answer", "category"):
                if any(col in r for r in meta):
                    ix.create_dataset(col, data=np.array([r.get(col, "") for r in meta], dtype=object),
                                      dtype=_STR)
            self._f.attrs["n_prompts"] = len(meta)
            self._f.close()
            self._closed = True
            self._atomic.__exit__(None, None, None)
        except BaseException as exc:
            self._abort(exc)
            raise

    def abort(self) -> None:
        """Discard everything written; the final path is left untouched."""
        self._abort(RuntimeError("aborted"))

    def _abort(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending, self._pending_bytes = [], 0
        try:
            f = getattr(self, "_f", None)
            if f is not None and f.id.valid:
                f.close()
        finally:
            try:
                self._atomic.__exit__(type(exc), exc, None)
            except BaseException as e:  # atomic_path re-raises the exception it was given
                if e is not exc:
                    raise

    def __del__(self):
        if not getattr(self, "_closed", True):
            try:
                self.abort()
            except Exception:
                pass


def _str_or_empty(v) -> str:
    if v is None:
        return ""
    try:
        if pd.isna(v):
            return ""
    except (TypeError, ValueError):
        pass
    return str(v)


def _records(meta) -> list[dict]:
    if isinstance(meta, pd.DataFrame):
        rows = meta.to_dict("records")
    else:
        rows = [dict(m) for m in meta]
    out = []
    for m in rows:
        pid = m.get("prompt_id", m.get("id"))
        if pid is None or "lang" not in m or "length" not in m:
            raise ValueError("each prompt needs prompt_id (or id), lang and length")
        r = {"prompt_id": _str_or_empty(pid), "lang": _str_or_empty(m["lang"]), "length": int(m["length"])}
        if r["length"] < 0:
            raise ValueError("prompt length must be >= 0")
        for col in ("answer", "category"):
            if col in m:
                r[col] = _str_or_empty(m[col])
        out.append(r)
    return out


# =========================================================================== reader
class ActivationStore:
    """Read an activation store written by :class:`StoreWriter`.

    Every array returned is float32 (float16 stores are upcast on read).
    Prompts are identified by ``(prompt_id, lang)``; per-prompt results are
    ordered as in :attr:`prompts` (the file's prompt order).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.h5`` file.
    cache_layers : int
        How many full hidden-state arrays to keep in memory (LRU), so that
        e.g. ``pooled(j, "en")`` then ``pooled(j, "zh")`` reads layer ``j`` once.
    expect : mapping, optional
        Attributes the file must have (:func:`zhunt.io.check_provenance`), e.g.
        ``{"model": "organism", "prompt_file_sha256": ...}``; default: what the running
        workflow rule expects (:func:`zhunt.io.expected_provenance`), nothing outside a rule.

    Raises
    ------
    ZhuntError
        ``path: not a complete zhunt activation store (...)`` for a missing,
        truncated or corrupt file, or one lacking required datasets;
        ``path: provenance attribute '...' is ..., expected ...`` for a file that is
        not the one expected (another model, prompt table or template).

    Attributes
    ----------
    prompts : pandas.DataFrame
        One row per prompt: ``prompt_id``, ``lang``, ``offset``, ``length``
        (+ ``answer``, ``category`` when stored), in file order.
    num_layers : int
        ``L`` (decoder layers); hidden indices run over ``0..L``.
    hidden_size : int
        ``d``.
    n_rows : int
        Total token rows.
    attrs : dict
        Root attributes.
    token_ids : np.ndarray
        ``(n_rows,)`` int32.
    special : np.ndarray
        ``(n_rows,)`` bool.
    """

    def __init__(self, path, *, cache_layers: int = 2, expect: Mapping | None = None):
        self.path = Path(path)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_layers = max(0, int(cache_layers))
        if not self.path.is_file():
            raise self._error("file not found")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise self._error(_short(exc)) from None
        try:
            self._load_index()
            check_provenance(self.path, self.attrs,
                             expect if expect is not None else expected_provenance("store", self.path))
        except ZhuntError:
            self._f.close()
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            self._f.close()
            raise self._error(_short(exc)) from None

    # ------------------------------------------------------------------ setup
    def _error(self, why: str) -> ZhuntError:
        return ZhuntError(str(self.path), f"not a complete zhunt activation store ({why})")

    def _load_index(self) -> None:
        f = self._f
        a = dict(f.attrs)
        if a.get("format") != FORMAT:
            raise self._error("missing format attribute")
        self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in a.items()}
        self.num_layers = int(a["num_layers"])
        self.hidden_size = int(a["hidden_size"])
        for name in ("prompt_id", "lang", "offset", "length", "token_ids", "special"):
            if f"index/{name}" not in f:
                raise self._error(f"missing dataset index/{name}")
        for j in range(self.num_layers + 1):
            if hidden_name(j) not in f:
                raise self._error(f"missing dataset {hidden_name(j)}")
        ix = f["index"]
        cols = {
            "prompt_id": ix["prompt_id"].asstr()[()],
            "lang": ix["lang"].asstr()[()],
            "offset": ix["offset"][()].astype(np.int64),
            "length": ix["length"][()].astype(np.int64),
        }
        for col in ("answer", "category"):
            if col in ix:
                cols[col] = ix[col].asstr()[()]
        self.prompts = pd.DataFrame(cols)
        self.token_ids = ix["token_ids"][()]
        self.special = ix["special"][()].astype(bool)
        self.n_rows = int(self.token_ids.shape[0])
        ends = self.prompts["offset"].to_numpy() + self.prompts["length"].to_numpy()
        if len(self.prompts) and (int(ends.max()) > self.n_rows or int(self.prompts["offset"].min()) < 0):
            raise self._error("index offsets beyond the stored rows")
        if self.special.shape != (self.n_rows,):
            raise self._error("index/special does not match index/token_ids")
        for j in range(self.num_layers + 1):
            shape = f[hidden_name(j)].shape
            if shape != (self.n_rows, self.hidden_size):
                raise self._error(f"{hidden_name(j)} has shape {shape}, expected {(self.n_rows, self.hidden_size)}")
        self._row_of = {(p, l): i for i, (p, l) in enumerate(zip(self.prompts["prompt_id"], self.prompts["lang"]))}

    # ------------------------------------------------------------------ basics
    def __enter__(self) -> "ActivationStore":
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        """Close the file and drop the cache."""
        self._cache.clear()
        if self._f.id.valid:
            self._f.close()

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, prompts={len(self.prompts)}, rows={self.n_rows}, "
                f"L={self.num_layers}, d={self.hidden_size})")

    @property
    def layers(self) -> range:
        """Decoder-layer indices ``0..L-1`` (layer ``l`` output = hidden index ``l + 1``)."""
        return range(self.num_layers)

    @property
    def hidden_indices(self) -> range:
        """Hidden-state indices ``0..L``."""
        return range(self.num_layers + 1)

    @property
    def languages(self) -> list[str]:
        """Languages present, in order of first appearance."""
        return list(dict.fromkeys(self.prompts["lang"]))

    @property
    def dtype(self) -> str:
        """Storage dtype (``"float32"`` or ``"float16"``)."""
        return str(self.attrs.get("dtype"))

    def prompt_ids(self, lang: str | None = None) -> list[str]:
        """Prompt ids (of one language, or all) in file order — the row order of :meth:`pooled`."""
        return list(self._select(lang)["prompt_id"])

    def _check_j(self, j: int, hi: int) -> int:
        if not (0 <= int(j) <= hi):
            raise IndexError(f"hidden-state index {j} outside 0..{hi}")
        return int(j)

    def _select(self, lang: str | None) -> pd.DataFrame:
        if lang is None:
            return self.prompts
        sel = self.prompts[self.prompts["lang"] == lang]
        if sel.empty:
            raise ZhuntError(str(self.path), f"no prompts in language {lang!r} (have {self.languages})")
        return sel

    def _read(self, j: int, sl=slice(None)) -> np.ndarray:
        try:
            return self._f[hidden_name(j)][sl].astype(np.float32, copy=False)
        except OSError as exc:
            raise self._error(f"reading {hidden_name(j)}: {_short(exc)}") from None

    def _span(self, prompt_id, lang) -> tuple[int, int]:
        key = (str(prompt_id), str(lang))
        if key not in self._row_of:
            raise KeyError(f"no prompt {key} in {self.path}")
        r = self.prompts.iloc[self._row_of[key]]
        return int(r["offset"]), int(r["length"])

    # ------------------------------------------------------------------ reads
    def hidden(self, j: int) -> np.ndarray:
        """All rows of hidden-state index ``j`` (one contiguous read).

        Parameters
        ----------
        j : int
            ``0..L`` (0 = embeddings, ``l + 1`` = output of decoder layer ``l``).

        Returns
        -------
        np.ndarray
            ``(n_rows, d)`` float32. Cached (LRU of ``cache_layers``); treat
            it as read-only.
        """
        j = self._check_j(j, self.num_layers)
        if j in self._cache:
            self._cache.move_to_end(j)
            return self._cache[j]
        arr = self._read(j)
        if self._cache_layers:
            self._cache[j] = arr
            while len(self._cache) > self._cache_layers:
                self._cache.popitem(last=False)
        return arr

    def layer_output(self, l: int) -> np.ndarray:
        """Raw output of decoder layer ``l`` (``hidden(l + 1)``), ``(n_rows, d)``."""
        self._check_j(l, self.num_layers - 1)
        return self.hidden(l + 1)

    def updates(self, l: int) -> np.ndarray:
        """The update written by decoder layer ``l``: ``hidden(l + 1) - hidden(l)``.

        Parameters
        ----------
        l : int
            Decoder layer ``0..L-1``.

        Returns
        -------
        np.ndarray
            ``(n_rows, d)`` float32.
        """
        self._check_j(l, self.num_layers - 1)
        return self.hidden(l + 1) - self.hidden(l)

    def tokens(self, prompt_id, lang: str, j: int) -> np.ndarray:
        """Hidden states of one prompt's tokens.

        Returns
        -------
        np.ndarray
            ``(T, d)`` float32, ``T`` = the prompt's token count (pads are
            never stored; special tokens are included — see :meth:`token_mask`).
        """
        j = self._check_j(j, self.num_layers)
        o, n = self._span(prompt_id, lang)
        if j in self._cache:
            return self._cache[j][o:o + n].copy()
        return self._read(j, slice(o, o + n))

    def prompt_token_ids(self, prompt_id, lang: str) -> np.ndarray:
        """``(T,)`` int32 token ids of one prompt."""
        o, n = self._span(prompt_id, lang)
        return self.token_ids[o:o + n]

    def token_mask(self, prompt_id, lang: str) -> np.ndarray:
        """``(T,)`` bool, True for the prompt's special tokens."""
        o, n = self._span(prompt_id, lang)
        return self.special[o:o + n]

    def _pool(self, H: np.ndarray, sel: pd.DataFrame, pooling: str, exclude_special: bool) -> np.ndarray:
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', not {pooling!r}")
        offs = sel["offset"].to_numpy()
        lens = sel["length"].to_numpy()
        out = np.empty((len(sel), H.shape[1]), dtype=np.float32)
        keep = ~self.special if exclude_special else np.ones(self.n_rows, dtype=bool)
        for i, (o, n) in enumerate(zip(offs, lens)):
            k = keep[o:o + n]
            if not k.any():  # only special tokens: fall back to all of them
                k = np.ones(n, dtype=bool)
            if pooling == "mean":
                out[i] = H[o:o + n][k].astype(np.float64).mean(axis=0)
            else:
                out[i] = H[o + int(np.flatnonzero(k)[-1])]
        return out

    def pooled(self, j: int, lang: str | None = None, pooling: str = "mean",
               exclude_special: bool = True) -> np.ndarray:
        """One vector per prompt at hidden-state index ``j``.

        Parameters
        ----------
        j : int
            Hidden-state index ``0..L``.
        lang : str, optional
            Keep prompts of this language only (default: all prompts).
        pooling : {"mean", "last"}
            Mean over the prompt's tokens, or the last token.
        exclude_special : bool
            Ignore special tokens (BOS, EOS, ...) — their norms are outliers.
            A prompt made only of special tokens falls back to all its tokens.

        Returns
        -------
        np.ndarray
            ``(N_prompts, d)`` float32, rows in file order (see :meth:`prompt_ids`).
        """
        return self._pool(self.hidden(j), self._select(lang), pooling, exclude_special)

    def pooled_update(self, l: int, lang: str | None = None, pooling: str = "mean",
                      exclude_special: bool = True) -> np.ndarray:
        """Pooled update of decoder layer ``l``: ``pooled(l + 1) - pooled(l)``.

        Returns
        -------
        np.ndarray
            ``(N_prompts, d)`` float32 (pooling is linear, so this equals
            pooling :meth:`updates`).
        """
        self._check_j(l, self.num_layers - 1)
        return (self.pooled(l + 1, lang, pooling, exclude_special)
                - self.pooled(l, lang, pooling, exclude_special))


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
