import pytest
from zhunt.site import DEFAULT_SITE, SITES, hidden_index


def test_hidden_index_convention():
    assert DEFAULT_SITE == "input" and SITES == ("input", "output")
    assert [hidden_index(l) for l in range(3)] == [0, 1, 2]
    assert [hidden_index(l, "output") for l in range(3)] == [1, 2, 3]
    with pytest.raises(ValueError):
        hidden_index(1, "middle")
    with pytest.raises(ValueError):
        hidden_index(-1)
