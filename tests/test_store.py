"""Tests for zhunt.data.store: the HDF5 activation store (writer and reader)."""

import hashlib
import os

import h5py
import numpy as np
import pandas as pd
import pytest

from zhunt.errors import ZhuntError
from zhunt.data.store import ActivationStore, StoreWriter, chunk_rows, hidden_name

L, D = 3, 8


def fake_data(seed=0):
    """Four prompts (two ids x two languages); row 0 of each prompt is a special token."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({
        "prompt_id": ["p1", "p1", "p2", "p2"],
        "lang": ["en", "zh", "en", "zh"],
        "length": [3, 2, 4, 1],
        "answer": ["37", "三十七", "5", None],
        "category": ["add", "add", "sub", "sub"],
    })
    n = int(meta["length"].sum())
    hidden = [rng.standard_normal((n, D)).astype(np.float32) for _ in range(L + 1)]
    tok = rng.integers(0, 50, n).astype(np.int64)
    special = np.zeros(n, dtype=bool)
    offs = np.concatenate([[0], np.cumsum(meta["length"])[:-1]])
    special[offs] = True
    tok[offs] = 1
    return meta, hidden, tok, special, offs


def write(path, dtype="float32", seed=0, split=2):
    meta, hidden, tok, special, offs = fake_data(seed)
    n = len(tok)
    with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=n, dtype=dtype,
                     attrs={"model": "tiny", "model_revision": None}) as w:
        r = int(offs[split])
        w.append(meta.iloc[:split], [h[:r] for h in hidden], tok[:r], special[:r])
        assert not os.path.exists(path)  # nothing at the final path while writing
        w.append(meta.iloc[split:], [h[r:] for h in hidden], tok[r:], special[r:])
    return meta, hidden, tok, special, offs


def dataset_digest(path):
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                h.update(name.encode())
                h.update(np.ascontiguousarray(obj[()]).tobytes() if obj.dtype.kind != "O"
                         else "\x00".join(obj.asstr()[()]).encode())
        f.visititems(visit)
    return h.hexdigest()


def test_layout(tmp_path):
    path = tmp_path / "s.h5"
    meta, hidden, tok, special, offs = write(path)
    with h5py.File(path, "r") as f:
        assert sorted(f["hidden"]) == [f"{j:03d}" for j in range(L + 1)]
        for j in range(L + 1):
            ds = f[hidden_name(j)]
            assert ds.shape == (len(tok), D) and ds.dtype == np.float32
            assert ds.chunks[1] == D  # whole rows per chunk: a layer is read row-contiguously
            assert ds.chunks[0] == chunk_rows(len(tok), D, 4)
            np.testing.assert_array_equal(ds[()], hidden[j])
        ix = f["index"]
        assert list(ix["prompt_id"].asstr()[()]) == ["p1", "p1", "p2", "p2"]
        assert list(ix["lang"].asstr()[()]) == ["en", "zh", "en", "zh"]
        np.testing.assert_array_equal(ix["offset"][()], offs)
        np.testing.assert_array_equal(ix["length"][()], [3, 2, 4, 1])
        assert ix["offset"].dtype == np.int64 and ix["token_ids"].dtype == np.int32
        np.testing.assert_array_equal(ix["token_ids"][()], tok)
        np.testing.assert_array_equal(ix["special"][()], special)
        assert list(ix["answer"].asstr()[()]) == ["37", "三十七", "5", ""]
        a = f.attrs
        assert a["num_layers"] == L and a["hidden_size"] == D and a["dtype"] == "float32"
        assert a["model"] == "tiny" and a["model_revision"] == ""
        assert "zhunt_version" in a and "created" in a and "raw output" in a["hidden_state_convention"]
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]  # no temp file left


def test_chunk_rows():
    assert chunk_rows(10, 8, 4) == 10
    assert chunk_rows(10 ** 6, 2048, 4) == 128
    assert chunk_rows(10 ** 6, 2048, 2) == 256
    assert chunk_rows(10 ** 6, 10 ** 6, 4) == 1


def test_reader_api(tmp_path):
    path = tmp_path / "s.h5"
    meta, hidden, tok, special, offs = write(path)
    with ActivationStore(path) as st:
        assert st.num_layers == L and st.hidden_size == D and st.n_rows == len(tok)
        assert list(st.layers) == [0, 1, 2] and list(st.hidden_indices) == [0, 1, 2, 3]
        assert list(st.prompts.columns) == ["prompt_id", "lang", "offset", "length", "answer", "category"]
        assert st.languages == ["en", "zh"]
        assert st.prompt_ids("zh") == ["p1", "p2"]
        assert st.attrs["model"] == "tiny"
        for j in range(L + 1):
            np.testing.assert_array_equal(st.hidden(j), hidden[j])
            np.testing.assert_array_equal(st.tokens("p2", "en", j), hidden[j][5:9])
        np.testing.assert_array_equal(st.prompt_token_ids("p1", "zh"), tok[3:5])
        np.testing.assert_array_equal(st.token_mask("p1", "zh"), [True, False])
        for l in range(L):
            np.testing.assert_array_equal(st.layer_output(l), hidden[l + 1])
            np.testing.assert_allclose(st.updates(l), hidden[l + 1] - hidden[l])

        j = 2
        H = hidden[j]
        spans = {"en": [(0, 3), (5, 4)], "zh": [(3, 2), (9, 1)]}
        for lang, sp in spans.items():
            mean_ex = np.stack([H[o + 1:o + n].mean(0) if n > 1 else H[o:o + n].mean(0) for o, n in sp])
            mean_all = np.stack([H[o:o + n].mean(0) for o, n in sp])
            last = np.stack([H[o + n - 1] for o, n in sp])
            np.testing.assert_allclose(st.pooled(j, lang), mean_ex, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(st.pooled(j, lang, exclude_special=False), mean_all, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(st.pooled(j, lang, pooling="last"), last)
            # pooled update == pooled(j+1) - pooled(j), and == pooling of updates
            upd = hidden[j + 1] - hidden[j]
            mean_upd = np.stack([upd[o + 1:o + n].mean(0) if n > 1 else upd[o:o + n].mean(0) for o, n in sp])
            np.testing.assert_allclose(st.pooled_update(j, lang), mean_upd, rtol=1e-5, atol=1e-5)
        assert st.pooled(j).shape == (4, D)
        assert st.pooled(0, "en").dtype == np.float32
        with pytest.raises(KeyError):
            st.tokens("nope", "en", 0)
        with pytest.raises(ZhuntError, match="no prompts in language"):
            st.pooled(0, "fr")
        with pytest.raises(IndexError):
            st.hidden(L + 1)
        with pytest.raises(IndexError):
            st.updates(L)
        with pytest.raises(ValueError):
            st.pooled(0, "en", pooling="max")


def test_float16(tmp_path):
    path = tmp_path / "s16.h5"
    meta, hidden, *_ = write(path, dtype="float16")
    with h5py.File(path, "r") as f:
        assert f[hidden_name(1)].dtype == np.float16
        assert f[hidden_name(1)].chunks[1] == D
    with ActivationStore(path) as st:
        assert st.dtype == "float16"
        h = st.hidden(1)
        assert h.dtype == np.float32
        np.testing.assert_allclose(h, hidden[1], rtol=1e-3, atol=1e-3)


def test_out_of_order_offsets_same_datasets(tmp_path):
    meta, hidden, tok, special, offs = fake_data()
    a = tmp_path / "a.h5"
    write(a)
    b = tmp_path / "b.h5"
    lens = meta["length"].to_numpy()
    with StoreWriter(b, num_layers=L, hidden_size=D, n_rows_total=len(tok),
                     attrs={"model": "tiny", "model_revision": None}) as w:
        for batch in ([3, 1], [2], [0]):
            rows = np.concatenate([np.arange(offs[i], offs[i] + lens[i]) for i in batch])
            w.append(meta.iloc[batch], [h[rows] for h in hidden], tok[rows], special[rows],
                     offsets=offs[batch])
    assert dataset_digest(a) == dataset_digest(b)
    # determinism: writing the same data twice gives the same dataset checksums
    c = tmp_path / "c.h5"
    write(c)
    assert dataset_digest(a) == dataset_digest(c)


def test_exception_leaves_nothing(tmp_path):
    meta, hidden, tok, special, offs = fake_data()
    path = tmp_path / "s.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=len(tok)) as w:
            w.append(meta.iloc[:2], [h[:5] for h in hidden], tok[:5], special[:5])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_or_duplicate_is_refused(tmp_path):
    meta, hidden, tok, special, offs = fake_data()
    path = tmp_path / "s.h5"
    with pytest.raises(ValueError, match="incomplete"):
        with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=len(tok)) as w:
            w.append(meta.iloc[:2], [h[:5] for h in hidden], tok[:5], special[:5])
    assert list(tmp_path.iterdir()) == []
    dup = meta.copy()
    dup.loc[1, "lang"] = "en"
    with pytest.raises(ValueError, match="duplicate"):
        with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=len(tok)) as w:
            w.append(dup, hidden, tok, special)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="hidden"):
        with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=len(tok)) as w:
            w.append(meta, hidden[:2], tok, special)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ZhuntError, match="dtype"):
        StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=3, dtype="bfloat16")
    assert list(tmp_path.iterdir()) == []


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_corrupt_truncated(tmp_path):
    with pytest.raises(ZhuntError, match="not a complete zhunt activation store") as e:
        ActivationStore(tmp_path / "missing.h5")
    _one_line(e)

    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(ZhuntError, match="junk.h5: not a complete zhunt activation store") as e:
        ActivationStore(junk)
    _one_line(e)

    good = tmp_path / "good.h5"
    write(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ZhuntError, match="not a complete zhunt activation store") as e:
        st = ActivationStore(trunc)
        for j in range(L + 1):
            st.hidden(j)
    _one_line(e)

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ZhuntError, match="not a complete"):
        ActivationStore(other)

    missing_layer = tmp_path / "ml.h5"
    missing_layer.write_bytes(data)
    with h5py.File(missing_layer, "a") as f:
        del f[hidden_name(2)]
    with pytest.raises(ZhuntError, match="missing dataset hidden/002"):
        ActivationStore(missing_layer)


def _write_batches(path, meta, hidden, tok, special, offs, batches, **kw):
    """Write prompts in the given batches (out of file order) and return the max rows ever buffered."""
    lens = meta["length"].to_numpy()
    peak = 0
    with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=len(tok),
                     attrs={"model": "tiny", "model_revision": None}, **kw) as w:
        for batch in batches:
            rows = np.concatenate([np.arange(offs[i], offs[i] + lens[i]) for i in batch]).astype(np.int64)
            w.append(meta.iloc[batch], [h[rows] for h in hidden], tok[rows], special[rows], offsets=offs[batch])
            peak = max(peak, w.rows_buffered)
            assert w.rows_written == sum(int(lens[i]) for b in batches[:batches.index(batch) + 1] for i in b)
    return peak


@pytest.mark.parametrize("buffer_bytes", [0, 200, 10 ** 9])
def test_buffered_writes_same_datasets(tmp_path, buffer_bytes):
    """Whatever the flush threshold, the datasets equal those of in-order writes; the buffer stays bounded."""
    meta, hidden, tok, special, offs = fake_data()
    ref = tmp_path / "ref.h5"
    write(ref)
    got = tmp_path / "got.h5"
    batches = [[3, 1], [2], [0]]
    peak = _write_batches(got, meta, hidden, tok, special, offs, batches, buffer_bytes=buffer_bytes)
    assert dataset_digest(ref) == dataset_digest(got)
    row_bytes = (L + 1) * D * 4 + 5
    largest = max(int(meta["length"].iloc[b].sum()) for b in batches)
    assert peak * row_bytes <= max(buffer_bytes, largest * row_bytes)
    if buffer_bytes == 0:
        assert peak == 0  # every append written at once
    if buffer_bytes == 10 ** 9:
        assert peak == len(tok)  # everything held until close


def test_buffered_random_batches(tmp_path):
    """Many prompts (one of length 0) in shuffled batches, small and large buffers: same datasets."""
    rng = np.random.default_rng(3)
    n_p = 40
    lens = rng.integers(1, 7, n_p)
    lens[5] = 0
    meta = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(n_p)], "lang": ["en"] * n_p, "length": lens})
    n = int(lens.sum())
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
    hidden = [rng.standard_normal((n, D)).astype(np.float32) for _ in range(L + 1)]
    tok = rng.integers(0, 50, n)
    special = rng.random(n) < 0.2
    ref = tmp_path / "ref.h5"
    _write_batches(ref, meta, hidden, tok, special, offs, [list(range(n_p))], buffer_bytes=0)
    order = rng.permutation(n_p)
    batches = [list(order[i:i + 6]) for i in range(0, n_p, 6)]
    for buf in (0, 1500, 4000, 10 ** 9):
        got = tmp_path / f"got{buf}.h5"
        _write_batches(got, meta, hidden, tok, special, offs, batches, buffer_bytes=buf)
        assert dataset_digest(ref) == dataset_digest(got), buf
        with ActivationStore(got) as st:
            np.testing.assert_array_equal(st.hidden(L), hidden[L])
            np.testing.assert_array_equal(st.special, special)


def test_append_copies_unless_told(tmp_path):
    meta, hidden, tok, special, offs = fake_data()
    path = tmp_path / "s.h5"
    mine = [h.copy() for h in hidden]
    with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=len(tok)) as w:
        w.append(meta, mine, tok, special)
        assert w.rows_buffered == len(tok)
        for h in mine:
            h[:] = 0  # the default copy=True keeps the buffered rows safe from the caller
    with ActivationStore(path) as st:
        for j in range(L + 1):
            np.testing.assert_array_equal(st.hidden(j), hidden[j])


def test_flush_and_overlapping_rows(tmp_path):
    meta, hidden, tok, special, offs = fake_data()
    path = tmp_path / "s.h5"
    with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=len(tok)) as w:
        w.append(meta.iloc[:2], [h[:5] for h in hidden], tok[:5], special[:5])
        w.flush()  # written to the temporary file, nothing at the final path yet
        assert w.rows_buffered == 0 and w.rows_written == 5 and not path.exists()
        w.append(meta.iloc[2:], [h[5:] for h in hidden], tok[5:], special[5:])
    with ActivationStore(path) as st:
        np.testing.assert_array_equal(st.hidden(1), hidden[1])
    path.unlink()
    with pytest.raises(ValueError, match="written more than once"):
        with StoreWriter(path, num_layers=L, hidden_size=D, n_rows_total=len(tok)) as w:
            w.append(meta.iloc[[0]], [h[:3] for h in hidden], tok[:3], special[:3], offsets=[0])
            w.append(meta.iloc[[1]], [h[3:5] for h in hidden], tok[3:5], special[3:5], offsets=[2])
            w.flush()
    assert list(tmp_path.iterdir()) == []
