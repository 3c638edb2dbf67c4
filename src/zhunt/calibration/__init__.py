"""Calibration of every verdict: null and planted inputs (:mod:`.generators`) and the registry that
runs each verdict on them over seeds (:mod:`.cases`). Imported by the tests and by
``bench/calibration.py`` only; nothing in the workflow depends on it."""

from zhunt.calibration.cases import CASES, Case, calibrate, case, label_matches

__all__ = ["CASES", "Case", "calibrate", "case", "label_matches"]
