"""The stage contract: `zhunt.stages.call` hands a stage the rule's named entries as plain dicts."""

from types import SimpleNamespace

import pytest
from snakemake.iocontainers import Namedlist

from zhunt.errors import ZhuntError
from zhunt.stages import call, named


def _job(tmp_path, **output):
    return SimpleNamespace(
        input=Namedlist(fromdict={"store": "a.h5", "masks": ["m1.h5", "m2.h5"]}),
        params=Namedlist(fromdict={"k": 16}),
        output=Namedlist(fromdict=output),
        wildcards=Namedlist(fromdict={"model": "organism"}),
        threads=2,
        log=[str(tmp_path / "job.log")],
    )


def test_call_passes_named_entries_as_dicts(tmp_path):
    seen = {}

    def stage(inputs, params, outputs, *, wildcards, threads):
        seen.update(inputs=inputs, params=params, outputs=outputs, wildcards=wildcards, threads=threads)

    call(_job(tmp_path, table=str(tmp_path / "t.tsv")), stage)
    assert seen == {"inputs": {"store": "a.h5", "masks": ["m1.h5", "m2.h5"]}, "params": {"k": 16},
                    "outputs": {"table": str(tmp_path / "t.tsv")}, "wildcards": {"model": "organism"},
                    "threads": 2}
    assert all(type(v) is dict for k, v in seen.items() if k != "threads")


def test_a_user_error_is_one_line_and_exit_1(tmp_path, capsys):
    def stage(inputs, params, outputs, **_):
        raise ZhuntError("models.organism.study.primary_layer", "layer 9 out of range (0..5)")

    with pytest.raises(SystemExit) as exc:
        call(_job(tmp_path), stage)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["zhunt error: models.organism.study.primary_layer: layer 9 out of range (0..5)"]
    assert "layer 9 out of range" in (tmp_path / "job.log").read_text()


def test_named_of_none_and_of_a_mapping():
    assert named(None) == {} and named({"a": 1}) == {"a": 1}
