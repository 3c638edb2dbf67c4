"""MGSM prompt sets: the benchmark's own files (mgsm_<lang>.tsv) read into the wide table."""

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from zhunt.config import check_prompt_tables
from zhunt.errors import ZhuntError
from zhunt.data.prompts import load_mgsm, load_prompt_table, write_prompt_table

ROOT = Path(__file__).resolve().parents[1]


def _beside_clone() -> Path:
    """``../shared/data/mgsm`` beside the clone (CI has it there); from a git worktree, beside
    the main checkout."""
    roots = [ROOT]
    try:
        common = subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=ROOT, capture_output=True,
                                text=True, timeout=30).stdout.strip()
        if common:
            roots.append((ROOT / common).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        pass
    for root in roots:
        if (root.parent / "shared" / "data" / "mgsm").is_dir():
            return root.parent / "shared" / "data" / "mgsm"
    return ROOT.parent / "shared" / "data" / "mgsm"


REAL_MGSM = _beside_clone()

FIXTURE = {
    "en": ["Tom has 3 apples and buys 4 more. How many apples?\t7",
           "A \"big\" box holds 12 pens.  How many pens in 2 boxes?\t24",
           "What is 1000 minus 1?\t999"],
    "zh": ["汤姆有3个苹果，又买了4个。他有多少个苹果？\t7",
           "一个大盒子装12支笔。2个盒子装多少支笔？\t24",
           "1000减1是多少？\t999"],
    "de": ["Tom hat 3 Äpfel und kauft 4 dazu. Wie viele Äpfel?\t7",
           "Eine große Kiste hat 12 Stifte. Wie viele in 2 Kisten?\t24",
           "Was ist 1000 minus 1?\t999"],
}


def write_mgsm(folder: Path, files=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for lang, lines in (files or FIXTURE).items():
        (folder / f"mgsm_{lang}.tsv").write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")
    return folder


def test_reads_fixture_in_wide_layout(tmp_path):
    df = load_mgsm(write_mgsm(tmp_path / "m"), ["zh", "en"])
    assert list(df.columns) == ["id", "category", "answer", "zh", "en"]
    assert df["id"].tolist() == ["mgsm-0", "mgsm-1", "mgsm-2"]  # 0-based line index
    assert df["answer"].tolist() == [7, 24, 999] and df["answer"].dtype == "int64"
    assert df.loc[1, "en"] == 'A "big" box holds 12 pens.  How many pens in 2 boxes?'
    assert df.attrs["lines"] == [1, 2, 3] and len(df.attrs["sha256"]) == 64
    assert load_mgsm(tmp_path / "m", ["en", "de"], limit=2)["id"].tolist() == ["mgsm-0", "mgsm-1"]
    # hash identifies the content of the languages read
    other = write_mgsm(tmp_path / "n", {**FIXTURE, "en": [FIXTURE["en"][0], FIXTURE["en"][1], "x\t999"]})
    assert load_mgsm(other, ["zh", "en"]).attrs["sha256"] != df.attrs["sha256"]


def test_written_table_reads_back_unchanged(tmp_path):
    df = load_mgsm(write_mgsm(tmp_path / "m"), ["en", "zh", "de"])
    write_prompt_table(df, tmp_path / "t.tsv")
    back = load_prompt_table(tmp_path / "t.tsv", ["en", "zh", "de"])
    pd.testing.assert_frame_equal(df, back)  # quotes stay quotes (no CSV quoting)


@pytest.mark.parametrize("edit, where, message", [
    ({"zh": FIXTURE["zh"][:2]}, "mgsm_zh.tsv:3", "ragged MGSM files: 2 problems here but 3 in mgsm_en.tsv"),
    ({"zh": [FIXTURE["zh"][0], FIXTURE["zh"][1].replace("\t24", "\t1,000"), FIXTURE["zh"][2]]},
     "mgsm_zh.tsv:2", "answer '1,000' is not a non-negative integer"),
    ({"en": [FIXTURE["en"][0].replace("\t7", "\t7.5")] + FIXTURE["en"][1:]},
     "mgsm_en.tsv:1", "answer '7.5' is not a non-negative integer"),
    ({"zh": [FIXTURE["zh"][0].replace("\t7", "\t8")] + FIXTURE["zh"][1:]},
     "mgsm_zh.tsv:1", "answer 8 differs from mgsm_en.tsv:1 (7): the language files are not parallel"),
    ({"en": [FIXTURE["en"][0], "no answer here", FIXTURE["en"][2]]},
     "mgsm_en.tsv:2", "malformed MGSM line: expected 'question<TAB>integer answer'"),
    ({"en": [FIXTURE["en"][0], "\t24", FIXTURE["en"][2]]}, "mgsm_en.tsv:2", "empty question"),
    ({"en": []}, "mgsm_en.tsv:1", "empty MGSM file"),
    ({"en": [FIXTURE["en"][0], "", FIXTURE["en"][2]]}, "mgsm_en.tsv:2", "blank line"),
])
def test_bad_files_are_one_line_path_line_errors(tmp_path, edit, where, message):
    folder = write_mgsm(tmp_path / "m", {**FIXTURE, **edit})
    with pytest.raises(ZhuntError) as err:
        load_mgsm(folder, ["en", "zh"])
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(folder / where)) and message in text


def test_missing_language_file_and_folder(tmp_path):
    folder = write_mgsm(tmp_path / "m")
    with pytest.raises(ZhuntError, match=r"mgsm_es\.tsv: missing MGSM language file"):
        load_mgsm(folder, ["en", "es"])
    with pytest.raises(ZhuntError, match="MGSM folder not found"):
        load_mgsm(tmp_path / "nope", ["en", "zh"])
    with pytest.raises(ZhuntError, match="languages: unknown language 'bn'"):
        load_mgsm(folder, ["en", "bn"])


def test_config_check_reads_mgsm_sets(tmp_path):
    folder = write_mgsm(tmp_path / "m", {**FIXTURE, "zh": FIXTURE["zh"][:1]})
    # as the workflow passes it: the schema's defaults filled in
    config = {"prompts": {"mgsm": {"format": "mgsm", "path": str(folder), "languages": ["en", "zh"],
                                   "generated": False, "limit": None}}}
    with pytest.raises(ZhuntError, match="ragged MGSM files"):
        check_prompt_tables(config)


@pytest.mark.skipif(not REAL_MGSM.is_dir(), reason=f"the MGSM files are not at {REAL_MGSM} (CI keeps them "
                    "in ../shared/data/mgsm beside the clone)")
def test_real_mgsm_files():
    langs = ["en", "zh", "es", "fr", "de"]
    df = load_mgsm(REAL_MGSM, langs)
    assert len(df) == 250 and df["id"].iloc[-1] == "mgsm-249"
    assert (df["answer"] >= 0).all()
    assert df.loc[0, "answer"] == 18 and df.loc[0, "en"].startswith("Janet")
    for lang in langs:
        assert df[lang].str.len().min() > 10
    assert len(load_mgsm(REAL_MGSM, langs, limit=20)) == 20


def test_mgsm_config_schedules_the_activation_stages_only(tmp_path):
    """config/mgsm.yaml with the targets its header names: the activation-space stages on MGSM,
    without Phase 0 or Exp. A (dry run on a fixture MGSM folder)."""
    import re
    import sys

    from zhunt.dryrun import scheduled_jobs

    header = (ROOT / "config/mgsm.yaml").read_text().split("analyze:")[0]
    targets = re.findall(r"results/\S+\.tsv", header)
    assert len(targets) == 7
    en = [f"Tom has {i} apples and buys 4 more. How many apples?\t{i + 4}" for i in range(12)]
    zh = [f"汤姆有{i}个苹果，又买了4个。他有多少个苹果？\t{i + 4}" for i in range(12)]
    folder = write_mgsm(tmp_path / "m", {"en": en, "zh": zh, "es": en, "fr": en, "de": en})
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile",
                          "config/mgsm.yaml", "--config", f"prompts={{mgsm: {{path: {folder}}}}}", "--", *targets],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = scheduled_jobs(res.stdout)
    jobs.pop("prepare_model", None)  # present on a fresh clone only
    assert jobs == {"mgsm_prompts": 1, "extract_activations": 1, "build_masks": 2, "phase2": 1, "datadriven_z": 1,
                    "theory": 1, "decomposition": 1, "ard_layer": 1, "ard_summary": 1, "ard_heldout": 1,
                    "bridge": 1}, jobs
