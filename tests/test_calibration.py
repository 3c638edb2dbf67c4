"""Every verdict calibrated (issue 13): null inputs give the null label in >= 95 % of the seeds, planted
inputs the positive label; the registry (zhunt.calibration.cases) covers every verdict function and its
thresholds appear in the report captions. bench/calibration.py prints the same cases over more seeds."""

import ast
import importlib
import re
from pathlib import Path

import numpy as np
import pytest

from zhunt.calibration import CASES, calibrate, case, label_matches
from zhunt.calibration import generators as G

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ROOT / "workflow" / "report"


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_null_and_planted_labels(c):
    """Calibrated verdicts: null label rate >= 95 %. The seeds' literal rules kept for comparison
    (``literal``) are not held to it: bench/calibration.py reports their null rate, the reason they are
    not the verdict. Every planted input gives the positive label (rate >= ``planted_min``)."""
    r = calibrate(c)
    if not c.literal:
        assert r["null_rate"] >= 0.95, (c.name, r["null_rate"], r["null_labels"])
    assert r["pos_rate"] >= c.planted_min, (c.name, r["pos_rate"], r["planted_labels"])
    assert r["null_lo"] < r["null_rate"] or r["null_rate"] == 0
    assert r["null_rate"] < r["null_hi"] or r["null_rate"] == 1  # Wilson: never zero width


def _forms(v) -> set:
    """Ways a threshold value may be written in a caption."""
    v = float(v)
    out = {f"{v:g}", f"{v:.2f}", repr(v)}
    if v == int(v):
        out.add(str(int(v)))
    if 0 < v < 1:
        out |= {f"{100 * v:g}%", f"{100 * v:g} %"}
    return out


@pytest.mark.parametrize("c", [c for c in CASES if c.caption], ids=[c.name for c in CASES if c.caption])
def test_captions_state_the_thresholds(c):
    text = " ".join((CAPTIONS / f).read_text(encoding="utf-8") for f in c.caption)
    for name, value in c.thresholds().items():
        found = any(re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", text) for f in _forms(value))
        assert found, f"{c.caption} does not state {name} = {value}"


def _verdict_functions() -> set:
    """Every public top-level ``*_verdict`` function of the package outside ``report`` (renderers)."""
    found = set()
    for path in (ROOT / "src" / "zhunt").rglob("*.py"):
        rel = path.relative_to(ROOT / "src").with_suffix("")
        if rel.parts[1] in ("report", "calibration"):
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_verdict") and not node.name.startswith("_"):
                found.add(".".join(rel.parts) + "." + node.name)
    return found


def test_every_verdict_function_is_registered():
    registered = {c.verdict.split(" ")[0] for c in CASES}
    missing = _verdict_functions() - registered
    assert not missing, f"verdict functions without a calibration case: {sorted(missing)}"
    for name in registered:
        mod, fn = name.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(mod), fn)), name


def test_registry_lookup_and_patterns():
    assert case("qk").name == "qk"
    with pytest.raises(KeyError, match="no calibration case"):
        case("nope")
    assert label_matches("aligned at j=3", ("aligned at j=*",)) and not label_matches("never aligned", ("aligned*",))


def test_generators_are_seeded():
    a = G.interchange_records(np.random.default_rng(3), 10, 0.5, 0.5, 0.1, 0.1)
    b = G.interchange_records(np.random.default_rng(3), 10, 0.5, 0.5, 0.1, 0.1)
    assert a.equals(b)
    np.testing.assert_array_equal(G.converging_states(2), G.converging_states(2))
    X, Y = G.bridge_pair(np.random.default_rng(0), rotation=True, noise=0.0)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), np.linalg.norm(X, axis=1), rtol=1e-12)  # a rotation
