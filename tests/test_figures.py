"""zhunt.report.figures: one style, PDF + PNG written atomically and reproducibly."""

import matplotlib.pyplot as plt

from zhunt.report.figures import STYLE, new_figure, save_figure


def _plot(stem, **kwargs):
    fig, ax = new_figure(width=3, height=2)
    ax.plot([0, 1, 2], [1, 0, 2])
    return save_figure(fig, stem, **kwargs)


def test_writes_pdf_and_png_and_closes(tmp_path):
    before = len(plt.get_fignums())
    written = _plot(tmp_path / "sub" / "fig.png")  # a known extension is dropped
    assert written == [tmp_path / "sub" / "fig.pdf", tmp_path / "sub" / "fig.png"]
    assert written[0].read_bytes()[:5] == b"%PDF-"
    assert written[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(plt.get_fignums()) == before
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["fig.pdf", "fig.png"]  # no temporaries


def test_same_figure_same_bytes(tmp_path):
    a = _plot(tmp_path / "a")
    b = _plot(tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]  # no creation date in the files


def test_style_and_formats(tmp_path):
    fig, _ = new_figure()
    assert plt.rcParams["pdf.fonttype"] == STYLE["pdf.fonttype"] == 42
    assert save_figure(fig, tmp_path / "only", formats=("png",)) == [tmp_path / "only.png"]
    assert not (tmp_path / "only.pdf").exists()
