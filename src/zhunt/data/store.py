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
``pooled/mean/{j:03d}``, ``pooled/last/{j:03d}`` (float32, optional)
    Only for the hidden indices whose token rows are *not* kept (see
    ``hidden_indices`` below): one row per prompt, in index order, the mean /
    last of the prompt's non-special tokens (all of them when it has only
    special ones) computed by the writer from the rows as stored — exactly
    what :meth:`ActivationStore.pooled` computes from token rows, so a stage
    that reads only pooled vectors (Exp. B, the seed-003 tests) gives the same
    numbers on a store that keeps a few layers' rows.
``pooled/mean_no_numerals/{j:03d}`` (float32, optional), ``index/numeral_ids`` (int64, optional)
    With the same rowless indices, when the writer is given the numeral token
    ids (:func:`zhunt.data.numerals.numeral_token_ids`, stored in
    ``index/numeral_ids``): the mean over the prompt's non-special,
    non-numeral tokens (the digit-confound control's pooling, the fallbacks of
    :func:`pool_keep`), what :meth:`ActivationStore.pooled` computes with
    ``exclude_ids`` = those ids.
``index/token_ids`` (int32), ``index/special`` (bool)
    One entry per row: the token id and whether it is a special token
    (BOS/EOS/any id in the tokenizer's ``all_special_ids``).
Root attributes
    ``format`` (``"zhunt-activations"``), ``format_version``, ``num_layers``,
    ``hidden_size``, ``dtype``, ``n_rows``, ``n_prompts``, ``zhunt_version``,
    ``hidden_state_convention``, ``created`` (UTC ISO time; the only
    non-deterministic value — compare dataset checksums, not file bytes), and
    whatever the caller passes (model name, source, revision, prompt-file
    SHA256, ...). ``hidden_indices`` lists the hidden indices whose token rows
    are stored (``hidden/{j:03d}`` exists only for these; config
    ``extraction.layers``); a store without it keeps all of ``0..L``.

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

from zhunt import __version__
from zhunt.errors import ZhuntError
from zhunt.io import atomic_path, check_provenance, expected_provenance

__all__ = ["StoreWriter", "ActivationStore", "HIDDEN_STATE_CONVENTION", "hidden_name", "pooled_name",
           "chunk_rows", "pool_keep", "pool_segments", "POOLINGS", "NUMERAL_POOLING", "gather_shards"]

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


#: Poolings the writer stores for hidden indices without token rows.
POOLINGS = ("mean", "last")
#: The stored numeral-free mean (rowless indices; ``index/numeral_ids`` names the excluded tokens).
NUMERAL_POOLING = "mean_no_numerals"


def hidden_name(j: int) -> str:
    """Dataset name of hidden-state index ``j`` (``hidden/007``)."""
    return f"hidden/{j:03d}"


def pooled_name(pooling: str, j: int) -> str:
    """Dataset name of the stored pooled vectors of hidden index ``j`` (``pooled/mean/007``)."""
    return f"pooled/{pooling}/{j:03d}"


def pool_keep(special: np.ndarray, token_ids: np.ndarray, offs, lens, exclude_special: bool = True,
              exclude_ids=None) -> np.ndarray:
    """Which rows a pooling uses, ``(n_rows,)`` bool: the one rule the writer and the reader share.

    A row is kept unless it is a special token (``exclude_special``) or its
    token id is in ``exclude_ids`` (e.g. :func:`zhunt.data.numerals.numeral_token_ids`).
    A prompt (rows ``offs[i] : offs[i] + lens[i]``) left with no row falls back
    to its non-special rows, and a prompt of special tokens only to all its rows.
    """
    special = np.asarray(special, dtype=bool)
    base = ~special if exclude_special else np.ones(len(special), dtype=bool)
    keep = base.copy()
    if exclude_ids is not None and len(exclude_ids):
        keep &= ~np.isin(np.asarray(token_ids), np.asarray(exclude_ids, dtype=np.int64))
    for o, n in zip(offs, lens):
        if not keep[o:o + n].any():
            keep[o:o + n] = base[o:o + n] if base[o:o + n].any() else True
    return keep


def pool_segments(H: np.ndarray, offs, lens, keep: np.ndarray, pooling: str) -> np.ndarray:
    """Pool each prompt's rows of ``H``: the one definition the writer and the reader share.

    Parameters
    ----------
    H : np.ndarray
        ``(n_rows, d)`` rows (float32).
    offs, lens : sequence of int
        Each prompt's first row in ``H`` and its number of rows.
    keep : np.ndarray
        ``(n_rows,)`` bool, the rows that count (non-special tokens); a prompt
        without any kept row falls back to all of its rows.
    pooling : {"mean", "last"}
        Mean of the kept rows (accumulated in float64), or the last kept row.

    Returns
    -------
    np.ndarray
        ``(n_prompts, d)`` float32.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be 'mean' or 'last', not {pooling!r}")
    out = np.empty((len(offs), H.shape[1]), dtype=np.float32)
    for i, (o, n) in enumerate(zip(offs, lens)):
        k = keep[o:o + n]
        if not k.any():  # only special tokens: fall back to all of them
            k = np.ones(n, dtype=bool)
        if pooling == "mean":
            out[i] = H[o:o + n][k].astype(np.float64).mean(axis=0)
        else:
            out[i] = H[o + int(np.flatnonzero(k)[-1])]
    return out


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
    hidden_indices : sequence of int, optional
        Hidden indices whose token rows are stored (default: all of
        ``0..L``). For every other index only the pooled vectors
        (:data:`POOLINGS`, non-special tokens) are kept; they are held in
        memory until :meth:`close` (``2 * n_prompts * d`` float32 per index).
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
                 hidden_indices: Sequence[int] | None = None, buffer_bytes: int = _BUFFER_BYTES,
                 numeral_ids=None):
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
        every = range(self.num_layers + 1)
        stored = sorted({int(j) for j in (every if hidden_indices is None else hidden_indices)})
        if not stored or stored[0] < 0 or stored[-1] > self.num_layers:
            raise ZhuntError("extraction.layers", f"hidden indices must be a non-empty subset of 0..{self.num_layers}, "
                             f"got {list(hidden_indices or [])}")
        self.hidden_indices = stored
        self._pooled_only = [j for j in every if j not in set(stored)]
        self.numeral_ids = None if numeral_ids is None else np.unique(np.asarray(numeral_ids, dtype=np.int64))
        self._poolings = list(POOLINGS) + ([NUMERAL_POOLING] if self.numeral_ids is not None else [])
        self._pooled: list[tuple[int, list[np.ndarray]]] = []  # (first offset, per pooling (n, |missing|, d))
        self._cursor = 0
        self._meta: list[dict] = []
        self.buffer_bytes = max(0, int(buffer_bytes))
        # appended but not yet written: (offsets, lengths, hidden arrays, token ids, flags) per append
        self._pending: list[tuple] = []
        self._pending_bytes = 0
        self._row_bytes = len(self.hidden_indices) * self.hidden_size * self._np_dtype.itemsize + 5
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
                for j in self.hidden_indices
            ]
            ix = self._f.create_group("index")
            self._tok = ix.create_dataset("token_ids", shape=(self.n_rows_total,), dtype=np.int32)
            self._special = ix.create_dataset("special", shape=(self.n_rows_total,), dtype=bool)
            if self.numeral_ids is not None:
                ix.create_dataset("numeral_ids", data=self.numeral_ids)
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
            a["hidden_indices"] = np.array(self.hidden_indices, dtype=np.int64)
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
            token_ids = np.asarray(token_ids)
            special = np.asarray(special, dtype=bool)
            offs = self._checked_batch(lengths, hidden, token_ids, special, offsets)
            nbytes = n * self._row_bytes
            if self._pending and self._pending_bytes + nbytes > self.buffer_bytes:
                self._flush_pending()
            if self._pooled_only:
                self._pooled.append((offs.copy(), self._pool_rowless(hidden, lengths, special, token_ids)))
            rows = [np.asarray(hidden[j]).astype(self._np_dtype, order="C", copy=copy) for j in self.hidden_indices]
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

    def _checked_batch(self, lengths: np.ndarray, hidden, token_ids: np.ndarray, special: np.ndarray,
                       offsets) -> np.ndarray:
        """The file offset of each prompt of a batch (after the rows so far unless ``offsets``),
        once the batch's shapes, offsets and (float16 store) magnitudes are checked."""
        n = int(lengths.sum())
        if len(hidden) != self.num_layers + 1:
            raise ValueError(f"expected {self.num_layers + 1} hidden arrays, got {len(hidden)}")
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
        if self._np_dtype == np.float16:
            self._check_float16(hidden)
        return offs

    def _pool_rowless(self, hidden, lengths: np.ndarray, special: np.ndarray, token_ids) -> list[np.ndarray]:
        """Pooled vectors of the hidden indices stored without token rows: per pooling of
        :data:`POOLINGS` (and :data:`NUMERAL_POOLING` with ``numeral_ids``) an
        ``(n_prompts, |rowless|, d)`` array, pooled from the rows as they would be stored
        (float16 rounding included)."""
        seg = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        as_stored = [np.asarray(hidden[j]).astype(self._np_dtype).astype(np.float32, copy=False)
                     for j in self._pooled_only]
        keep = pool_keep(special, token_ids, seg, lengths)
        how = [(p, keep) for p in POOLINGS]
        if self.numeral_ids is not None:
            how.append(("mean", pool_keep(special, token_ids, seg, lengths, exclude_ids=self.numeral_ids)))
        return [np.stack([pool_segments(H, seg, lengths, k, p) for H in as_stored], axis=1) for p, k in how]

    def _check_float16(self, hidden) -> None:
        """Refuse values a float16 store would turn into inf (|x| > 65504)."""
        limit = float(np.finfo(np.float16).max)
        for j, h in enumerate(hidden):
            peak = float(np.max(np.abs(h))) if np.size(h) else 0.0
            if not peak <= limit:
                raise ZhuntError("extraction.dtype", f"hidden index {j} holds |h| up to {peak:.4g}, beyond the "
                                 f"float16 maximum {limit:.0f}: store this model in float32")

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
            if self._pooled_only:
                all_offs = np.concatenate([o for o, _ in self._pooled])
                rank = np.searchsorted(offs, all_offs)  # file position of each appended prompt
                for p, pooling in enumerate(self._poolings):
                    P = np.empty((len(meta), len(self._pooled_only), self.hidden_size), dtype=np.float32)
                    P[rank] = np.concatenate([arrs[p] for _, arrs in self._pooled], axis=0)
                    for c, j in enumerate(self._pooled_only):
                        self._f.create_dataset(pooled_name(pooling, j), data=np.ascontiguousarray(P[:, c]))
                self._pooled = []
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
        every = range(self.num_layers + 1)
        stored = a.get("hidden_indices")
        self.stored_indices = sorted(int(j) for j in stored) if stored is not None else list(every)
        self._stored = set(self.stored_indices)
        for j in every:
            names = [hidden_name(j)] if j in self._stored else [pooled_name(p, j) for p in POOLINGS]
            for name in names:
                if name not in f:
                    raise self._error(f"missing dataset {name}")
        self._check_sources()
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
        for j in self.stored_indices:
            shape = f[hidden_name(j)].shape
            if shape != (self.n_rows, self.hidden_size):
                raise self._error(f"{hidden_name(j)} has shape {shape}, expected {(self.n_rows, self.hidden_size)}")
        self._row_of = {(p, l): i for i, (p, l) in enumerate(zip(self.prompts["prompt_id"], self.prompts["lang"]))}

    def _check_sources(self) -> None:
        """A gathered (sharded) store's rows live in its shard files: every one must be there
        (HDF5 would silently read a missing source as fill values)."""
        shards = self.attrs.get("shards")
        if shards is None:
            return
        for name in np.atleast_1d(shards):
            src = self.path.parent / (name.decode() if isinstance(name, bytes) else str(name))
            if not src.is_file():
                raise self._error(f"shard file {src} is missing; delete {self.path.name} and re-run: "
                                  "only the missing shard and the gather job run again")

    def _missing(self, j: int) -> ZhuntError:
        return ZhuntError("extraction.layers",
                          f"{self.path} keeps token rows only at hidden indices {self.stored_indices}, not at {j}; "
                          f"add {j} to extraction.layers (or set it to all) and re-run extraction")

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
        if j not in self._stored:
            raise self._missing(j)
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

    def pool_mask(self, sel: pd.DataFrame | None = None, exclude_special: bool = True,
                  exclude_ids=None) -> np.ndarray:
        """Which rows a mean pooling uses: ``(n_rows,)`` bool.

        A row is kept unless it is a special token (``exclude_special``) or its
        token id is in ``exclude_ids`` (e.g. :func:`zhunt.data.numerals.numeral_token_ids`).
        A prompt left with no row falls back to its non-special rows, and a
        prompt of special tokens only to all its rows.
        """
        sel = self.prompts if sel is None else sel
        return pool_keep(self.special, self.token_ids, sel["offset"].to_numpy(), sel["length"].to_numpy(),
                         exclude_special, exclude_ids)

    def _pool(self, H: np.ndarray, sel: pd.DataFrame, pooling: str, exclude_special: bool,
              exclude_ids=None) -> np.ndarray:
        keep = self.pool_mask(sel, exclude_special, exclude_ids)
        return pool_segments(H, sel["offset"].to_numpy(), sel["length"].to_numpy(), keep, pooling)

    def pooled(self, j: int, lang: str | None = None, pooling: str = "mean",
               exclude_special: bool = True, exclude_ids=None) -> np.ndarray:
        """One vector per prompt at hidden-state index ``j``: the one pooling primitive.

        ``x_i = (1 / |T_i|) sum_{t in T_i} h_i[t]`` (``mean``) or ``h_i[max T_i]``
        (``last``), ``T_i`` = the prompt's tokens kept by :meth:`pool_mask`.

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
        exclude_ids : array-like of int, optional
            Also ignore tokens with these ids (the numeral-free pooling passes
            :func:`zhunt.data.numerals.numeral_token_ids`). A prompt with nothing
            left falls back to its non-special tokens.

        Returns
        -------
        np.ndarray
            ``(N_prompts, d)`` float32, rows in file order (see :meth:`prompt_ids`).
        """
        j = self._check_j(j, self.num_layers)
        if j not in self._stored:
            if pooling not in POOLINGS:
                raise ValueError(f"pooling must be 'mean' or 'last', not {pooling!r}")
            name = pooling
            if exclude_ids is not None and len(exclude_ids):  # the stored numeral-free mean, if it is that one
                if pooling != "mean" or not self._is_numeral_set(exclude_ids):
                    raise self._missing(j)
                name = NUMERAL_POOLING
            if not exclude_special:
                raise self._missing(j)  # only the non-special poolings are kept without rows
            sel = self._select(lang)
            try:
                P = self._f[pooled_name(name, j)][()]
            except OSError as exc:
                raise self._error(f"reading {pooled_name(name, j)}: {_short(exc)}") from None
            return P[sel.index.to_numpy()]
        return self._pool(self.hidden(j), self._select(lang), pooling, exclude_special, exclude_ids)

    def _is_numeral_set(self, ids) -> bool:
        """Whether ``ids`` are exactly the numeral ids whose numeral-free mean the writer kept."""
        if "index/numeral_ids" not in self._f:
            return False
        kept = np.asarray(self._f["index/numeral_ids"][()], dtype=np.int64)
        return np.array_equal(kept, np.unique(np.asarray(ids, dtype=np.int64)))

    def pooled_update(self, l: int, lang: str | None = None, pooling: str = "mean",
                      exclude_special: bool = True, exclude_ids=None) -> np.ndarray:
        """Pooled update of decoder layer ``l``: ``pooled(l + 1) - pooled(l)``.

        Returns
        -------
        np.ndarray
            ``(N_prompts, d)`` float32 (pooling is linear, so this equals
            pooling :meth:`updates`).
        """
        self._check_j(l, self.num_layers - 1)
        return (self.pooled(l + 1, lang, pooling, exclude_special, exclude_ids)
                - self.pooled(l, lang, pooling, exclude_special, exclude_ids))


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


# =========================================================================== shards
def gather_shards(shard_paths: Sequence, out_path) -> dict:
    """Join the shard files of a sharded extraction into one store (HDF5 virtual datasets).

    Each shard is a complete store of the prompts its job ran (written by
    :func:`zhunt.data.extraction.extract_to_store` with ``shard=(i, N)``). The
    gathered file holds the full index (prompts in the prompt table's order,
    their offsets, token ids, special flags, and any pooled vectors) and, for
    every stored hidden index, a *virtual* dataset ``hidden/{j:03d}`` of shape
    ``(N_rows, d)`` whose rows map, prompt run by prompt run, onto the shards'
    rows. Readers (:class:`ActivationStore`, plain h5py) see one store whose
    reads equal the unsharded store's bit for bit; no row is copied. Why
    virtual datasets and not a reader over a shard list: every existing reader
    (and any HDF5 tool) works unchanged, a whole-layer read stays one call
    (HDF5 reads each shard's part; measured as fast as a plain dataset for
    1,250 prompts x 4 shards), and the only cost is that the shard files must
    stay beside the gathered file: their names (relative, same folder) are in
    the root attribute ``shards`` and the reader refuses to open a gathered
    store with a shard missing (HDF5 would fill its rows silently).

    Parameters
    ----------
    shard_paths : sequence of path
        All ``N`` shard files, in the same folder as ``out_path``.
    out_path : path
        The gathered store (written atomically).

    Returns
    -------
    dict
        ``n_prompts``, ``n_rows``, ``n_shards``, ``n_mappings`` (virtual
        mappings per hidden dataset).

    Raises
    ------
    ZhuntError
        Naming a shard file that is not a shard store, comes from another
        prompt table, model shape, dtype or layer selection, or repeats or
        misses shards or prompts.
    """
    out_path = Path(out_path)
    paths = [Path(p) for p in shard_paths]
    stores = [ActivationStore(p, cache_layers=0) for p in paths]
    try:
        _check_shards(paths, stores, out_path)
        first = stores[0]
        n_total = int(first.attrs["n_prompts_total"])
        owner, local = _shard_owners(paths, stores, n_total)
        index = pd.DataFrame([stores[s].prompts.iloc[i] for s, i in zip(owner, local)]).reset_index(drop=True)
        lengths = index["length"].to_numpy(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        n_rows = int(lengths.sum())
        src_off = index["offset"].to_numpy(np.int64)  # row offset inside the owning shard
        runs = _row_runs(owner, offsets, src_off, lengths)
        with atomic_path(out_path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
            _write_virtual_hidden(f, paths, stores, runs, n_rows)
            _write_gathered_index(f, index, offsets, _gathered_tokens(stores, owner, src_off, offsets, lengths))
            if "index/numeral_ids" in first._f:
                f["index"].create_dataset("numeral_ids", data=first._f["index/numeral_ids"][()])
            kept = [*POOLINGS, *([NUMERAL_POOLING] if "index/numeral_ids" in first._f else [])]
            for j in (j for j in range(first.num_layers + 1) if j not in first._stored):
                for pooling in kept:
                    P = [st._f[pooled_name(pooling, j)][()] for st in stores]
                    f.create_dataset(pooled_name(pooling, j),
                                     data=np.stack([P[s][i] for s, i in zip(owner, local)]))
            for k, v in first.attrs.items():
                if k not in ("shard", "prompt_positions", "created"):
                    f.attrs[k] = v
            f.attrs["n_rows"] = n_rows
            f.attrs["n_prompts"] = n_total
            f.attrs.create("shards", [p.name for p in paths], dtype=_STR)
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    finally:
        for st in stores:
            st.close()
    return {"n_prompts": n_total, "n_rows": n_rows, "n_shards": len(stores), "n_mappings": len(runs)}


def _check_shards(paths: Sequence[Path], stores: Sequence[ActivationStore], out_path: Path) -> None:
    """Every file is a shard store beside ``out_path``, of the same extraction as the first, and
    each shard of the ``n_shards`` comes exactly once."""
    first = stores[0]
    same = ("n_shards", "n_prompts_total", "prompt_table_sha256", "num_layers", "hidden_size", "dtype")
    seen = {}
    for p, st in zip(paths, stores):
        if "shard" not in st.attrs:
            raise ZhuntError(str(p), "not a shard store (no `shard` attribute)")
        if p.parent.resolve() != out_path.parent.resolve():
            raise ZhuntError(str(p), f"shard files must sit beside the gathered store {out_path}")
        for key in same:
            if str(st.attrs.get(key)) != str(first.attrs.get(key)):
                raise ZhuntError(str(p), f"shard attribute {key}={st.attrs.get(key)!r} differs from "
                                 f"{paths[0].name}'s {first.attrs.get(key)!r}")
        if st.stored_indices != first.stored_indices:
            raise ZhuntError(str(p), f"shard keeps hidden indices {st.stored_indices}, "
                             f"{paths[0].name} keeps {first.stored_indices}")
        i = int(st.attrs["shard"])
        if i in seen:
            raise ZhuntError(str(p), f"shard {i} given twice (also {seen[i]})")
        seen[i] = p
    if int(first.attrs["n_shards"]) != len(stores):
        raise ZhuntError(str(paths[0]), f"written as one of {first.attrs['n_shards']} shards, "
                         f"but {len(stores)} were given")


def _shard_owners(paths, stores, n_total: int) -> tuple[np.ndarray, np.ndarray]:
    """``(owner, local)``: for each of the ``n_total`` prompts, its shard and its index there."""
    owner = np.full(n_total, -1, dtype=np.int64)
    local = np.full(n_total, -1, dtype=np.int64)
    for s, st in enumerate(stores):
        pos = np.asarray(st.attrs["prompt_positions"], dtype=np.int64).reshape(-1)
        if len(pos) != len(st.prompts) or (owner[pos] != -1).any():
            raise ZhuntError(str(paths[s]), "shard prompt positions overlap another shard's")
        owner[pos] = s
        local[pos] = np.arange(len(pos))
    if (owner == -1).any():
        raise ZhuntError(str(paths[0]), f"{int((owner == -1).sum())} prompts are in no shard")
    return owner, local


def _gathered_tokens(stores, owner, src_off, offsets, lengths) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``(N_rows,)`` int32 and special flags ``(N_rows,)`` bool in gathered row order."""
    n_rows = int(lengths.sum())
    tok = np.empty(n_rows, dtype=np.int32)
    spec = np.empty(n_rows, dtype=bool)
    for g in range(len(owner)):
        st, o, n = stores[owner[g]], src_off[g], lengths[g]
        tok[offsets[g]:offsets[g] + n] = st.token_ids[o:o + n]
        spec[offsets[g]:offsets[g] + n] = st.special[o:o + n]
    return tok, spec


def _row_runs(owner, offsets, src_off, lengths) -> list[list[int]]:
    """Runs ``[shard, gathered row, shard row, n rows]``: consecutive prompts that are
    consecutive rows of one shard (one virtual mapping each)."""
    runs: list[list[int]] = []
    for g in range(len(owner)):
        s = int(owner[g])
        if runs and runs[-1][0] == s and runs[-1][2] + runs[-1][3] == src_off[g]:
            runs[-1][3] += int(lengths[g])
        else:
            runs.append([s, int(offsets[g]), int(src_off[g]), int(lengths[g])])
    return runs


def _write_virtual_hidden(f, paths, stores, runs, n_rows: int) -> None:
    """``hidden/{j:03d}`` of every stored index as an ``(N_rows, d)`` virtual dataset mapping each
    run onto its shard file (named relative: the shards sit beside the gathered store)."""
    first = stores[0]
    d = first.hidden_size
    np_dtype = np.dtype(_DTYPES[first.dtype])
    vspace = h5py.h5s.create_simple((n_rows, d))
    sel = []
    for s, g0, l0, m in runs:
        vs = vspace.copy()
        vs.select_hyperslab((g0, 0), (m, d))
        ss = h5py.h5s.create_simple((stores[s].n_rows, d))
        ss.select_hyperslab((l0, 0), (m, d))
        sel.append((vs, paths[s].name.encode(), ss))
    grp = f.create_group("hidden")
    for j in first.stored_indices:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_fill_value(np.array(np.nan, dtype=np_dtype))
        name = hidden_name(j).encode()
        for vs, fname, ss in sel:
            dcpl.set_virtual(vs, fname, name, ss)
        h5py.h5d.create(grp.id, f"{j:03d}".encode(), h5py.h5t.py_create(np_dtype), vspace, dcpl=dcpl)


def _write_gathered_index(f, index: pd.DataFrame, offsets, tokens) -> None:
    """The ``index`` group of the gathered store: prompts in table order, offsets, lengths,
    answers/categories when present, token ids and special flags."""
    tok, spec = tokens
    ix = f.create_group("index")
    ix.create_dataset("prompt_id", data=index["prompt_id"].to_numpy(dtype=object), dtype=_STR)
    ix.create_dataset("lang", data=index["lang"].to_numpy(dtype=object), dtype=_STR)
    ix.create_dataset("offset", data=offsets)
    ix.create_dataset("length", data=index["length"].to_numpy(np.int64))
    for col in ("answer", "category"):
        if col in index:
            ix.create_dataset(col, data=index[col].to_numpy(dtype=object), dtype=_STR)
    ix.create_dataset("token_ids", data=tok)
    ix.create_dataset("special", data=spec)
