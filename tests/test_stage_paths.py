"""Tests for zhunt.stages.paths: the shapes of a rule's table and figure outputs."""

from pathlib import Path

import pytest

from zhunt.stages.paths import figure_stem, table_paths


def test_table_paths_keep_the_rule_order():
    assert table_paths(["results/m/x/t.tsv", "results/m/x/t.md"]) == ("results/m/x/t.tsv", "results/m/x/t.md")
    with pytest.raises(ValueError):
        table_paths(["only.tsv"])


def test_figure_stem_from_pdf_and_png():
    assert figure_stem(["results/m/figures/phases.pdf", "results/m/figures/phases.png"]) == \
        Path("results/m/figures/phases")
    for bad in (["a.pdf", "b.png"], ["a.pdf", "a.svg"], ["a.pdf"]):
        with pytest.raises(ValueError, match="stem.pdf, stem.png"):
            figure_stem(bad)
