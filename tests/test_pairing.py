"""Tests for zhunt.data.pairing: the one pairing of prompts by problem id."""

import numpy as np
import pytest

from zhunt.data.pairing import pair_by_problem
from zhunt.errors import ZhuntError


def test_rows_put_every_language_in_first_language_order():
    problems, rows = pair_by_problem({"zh": ["b", "a", "c"], "en": ["a", "b", "c"], "es": ["c", "b", "a"]},
                                     where="s.h5")
    assert problems == ["b", "a", "c"]
    assert rows["zh"].tolist() == [0, 1, 2]
    assert rows["en"].tolist() == [1, 0, 2]
    assert rows["es"].tolist() == [1, 2, 0]
    assert rows["en"].dtype == np.dtype(int)


def test_ids_compared_as_strings():
    problems, rows = pair_by_problem({"zh": [1, 2], "en": ["2", "1"]}, where="s.h5")
    assert problems == ["1", "2"] and rows["en"].tolist() == [1, 0]


def test_missing_problem_is_an_error_naming_it():
    with pytest.raises(ZhuntError, match=r"^s\.h5: problem 'c' has a 'zh' prompt but no 'en' prompt "
                                         r"\(1 such problem\(s\)\)"):
        pair_by_problem({"zh": ["a", "b", "c"], "en": ["a", "b"]}, where="s.h5")
    with pytest.raises(ZhuntError, match=r"problem 'x' has a 'en' prompt but no 'zh' prompt \(2 such"):
        pair_by_problem({"zh": ["a"], "en": ["a", "x", "y"]}, where="s.h5")


@pytest.mark.parametrize("ids, msg", [
    ({"zh": ["a"]}, r"needs at least 2 languages, got \['zh'\]"),
    ({"zh": ["a"], "en": []}, r"language 'en' has no prompts"),
    ({"zh": ["a", "a"], "en": ["a"]}, r"problem 'a' has more than one 'zh' prompt"),
])
def test_bad_inputs(ids, msg):
    with pytest.raises(ZhuntError, match=msg):
        pair_by_problem(ids, where="s.h5")


def test_min_problems():
    with pytest.raises(ZhuntError, match=r"need at least 3 problems in each of \['zh', 'en'\], found 2"):
        pair_by_problem({"zh": ["a", "b"], "en": ["b", "a"]}, where="s.h5", min_problems=3)
    assert pair_by_problem({"zh": ["a", "b"], "en": ["b", "a"]}, where="s.h5", min_problems=2)[0] == ["a", "b"]
