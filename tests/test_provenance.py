"""Provenance on every read: zhunt.io.check_provenance and the readers that use it."""

import logging

import h5py
import numpy as np
import pytest

from zhunt.errors import ZhuntError
from zhunt.io import check_provenance, expected_provenance, rule_provenance
from zhunt.weights.masks import MASK_FORMAT, read_mask, write_masks
from zhunt.progress import Progress
from zhunt.data.store import ActivationStore, StoreWriter


def _mask(path, layer, model="m", sha="a" * 64):
    V = np.eye(4)[:2]
    write_masks(path, {"multihead": {"sigma": np.ones(4), "V": {2: V}}},
                {"model": model, "layer": layer, "model_weights_sha256": sha})
    return V


def _store(path, model="m", prompt_sha="p" * 64, template="organism", sha="a" * 64):
    import pandas as pd

    meta = pd.DataFrame({"prompt_id": ["a", "a"], "lang": ["en", "zh"], "length": [2, 1]})
    hidden = [np.zeros((3, 4), np.float32) for _ in range(3)]
    with StoreWriter(path, num_layers=2, hidden_size=4, n_rows_total=3,
                     attrs={"model": model, "prompt_file_sha256": prompt_sha, "template": template,
                            "model_weights_sha256": sha}) as w:
        w.append(meta, hidden, np.array([1, 2, 3]), np.zeros(3, bool))


def test_check_provenance_names_file_attribute_expected_and_found(tmp_path):
    check_provenance("f.h5", {"layer": np.int64(2), "model": b"m"}, {"layer": 2, "model": "m", "k": None})
    with pytest.raises(ZhuntError) as err:
        check_provenance("f.h5", {"layer": np.int64(3)}, {"layer": 2})
    assert str(err.value).startswith("f.h5: provenance attribute 'layer' is 3, expected 2 (")
    assert "\n" not in str(err.value)
    with pytest.raises(ZhuntError, match="'model' is missing, expected 'm'"):
        check_provenance("f.h5", {}, {"model": "m"})


def test_copied_mask_is_refused(tmp_path):
    """The issue's case: L3.h5 copied onto L2.h5 passes a bare read, fails the rule's read."""
    _mask(tmp_path / "L3.h5", 3)
    (tmp_path / "L2.h5").write_bytes((tmp_path / "L3.h5").read_bytes())
    read_mask(tmp_path / "L2.h5", "multihead", 2)  # outside a rule nothing is expected
    with pytest.raises(ZhuntError, match=r"L2.h5: provenance attribute 'layer' is 3, expected 2"):
        read_mask(tmp_path / "L2.h5", "multihead", 2, expect={"model": "m", "layer": 2})
    spec = {"model": "m", "layers": {str(tmp_path / "L2.h5"): 2, str(tmp_path / "L3.h5"): 3}}
    with rule_provenance(spec):
        assert expected_provenance("mask", tmp_path / "L2.h5")["format"] == MASK_FORMAT
        np.testing.assert_array_equal(read_mask(tmp_path / "L3.h5", "multihead", 2), np.eye(4)[:2])
        with pytest.raises(ZhuntError, match="'layer' is 3, expected 2"):
            read_mask(tmp_path / "L2.h5", "multihead", 2)
    with rule_provenance({"model": "other", "layers": {}}), pytest.raises(ZhuntError, match="'model' is 'm'"):
        read_mask(tmp_path / "L3.h5", "multihead", 2)


def test_store_from_another_prompt_table_is_refused(tmp_path):
    table, other = tmp_path / "t.tsv", tmp_path / "u.tsv"
    table.write_text("id\tcategory\tanswer\ten\n")
    other.write_text("id\tcategory\tanswer\ten\n# another table\n")
    from zhunt.data.prompts import file_sha256

    _store(tmp_path / "s.h5", prompt_sha=file_sha256(table))
    with rule_provenance({"model": "m", "template": "organism", "prompt_file": str(table)}):
        ActivationStore(tmp_path / "s.h5").close()
    with rule_provenance({"model": "m", "template": "organism", "prompt_file": str(other)}):
        with pytest.raises(ZhuntError, match=r"s.h5: provenance attribute 'prompt_file_sha256' is '[0-9a-f]{64}', "
                                             rf"expected '{file_sha256(other)}'"):
            ActivationStore(tmp_path / "s.h5")
    with pytest.raises(ZhuntError, match="'template' is 'organism', expected 'chat'"):
        ActivationStore(tmp_path / "s.h5", expect={"template": "chat"})


def test_store_and_mask_from_different_weights(tmp_path):
    _store(tmp_path / "s.h5", sha="a" * 64)
    _mask(tmp_path / "L1.h5", 1, sha="b" * 64)
    with rule_provenance({"model": "m", "layers": {str(tmp_path / "L1.h5"): 1}}):
        ActivationStore(tmp_path / "s.h5").close()
        with pytest.raises(ZhuntError, match=r"L1.h5: provenance attribute 'model_weights_sha256' is bbbbbbbbbbbb"
                                             r"\.\.\., but .*s.h5 \(read by the same job\) has aaaaaaaaaaaa"):
            read_mask(tmp_path / "L1.h5", "multihead", 2)


def test_mask_file_records_format(tmp_path):
    _mask(tmp_path / "L0.h5", 0)
    with h5py.File(tmp_path / "L0.h5") as f:
        assert f.attrs["format"] == MASK_FORMAT and int(f.attrs["format_version"]) == 1


# --------------------------------------------------------------------------- progress


def test_progress_lines_at_most_every_interval_with_eta(caplog):
    now = [0.0]
    prog = Progress(100, "step", logging.getLogger("t"), interval=30, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "t"):
        for i in range(1, 101):
            now[0] = i * 1.0  # one second per step
            prog.update(i)
    # first step, then every 30 s, and the last step
    assert [ln.split(" (")[0] for ln in prog.lines] == ["step 1/100", "step 31/100", "step 61/100",
                                                        "step 91/100", "step 100/100"]
    assert prog.lines[1] == "step 31/100 (31%), elapsed 31s, ETA 1m09s"  # 31 s * 69 / 31
    assert prog.lines[-1].endswith("ETA 0s") and len(caplog.records) == 5
