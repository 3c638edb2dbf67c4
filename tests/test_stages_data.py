"""The prompt and activation stages (zhunt.stages.data): rule inputs and params in, files at the
rule's output paths out."""

from pathlib import Path

import pandas as pd

from zhunt.data.store import ActivationStore
from zhunt.stages.data import run_extract_activations, run_mgsm_prompts, run_organism_prompts

ROOT = Path(__file__).resolve().parents[1]


def test_organism_prompts_stage(tmp_path):
    out = tmp_path / "p" / "organism.tsv"
    run_organism_prompts({}, {"n": 6, "ops": ["plus"]}, {"table": str(out)}, wildcards={"model": "o"})
    t = pd.read_csv(out, sep="\t")
    assert list(t.columns) == ["id", "category", "answer", "en", "zh"]
    assert t["id"].tolist() == [f"org-{i:03d}" for i in range(6)] and set(t["category"]) == {"addition"}
    a, b = map(int, t["en"].iloc[0].removeprefix("What is ").removesuffix("?").split(" plus "))
    assert t["answer"].iloc[0] == a + b


def test_mgsm_prompts_stage(tmp_path):
    folder = tmp_path / "mgsm"
    folder.mkdir()
    (folder / "mgsm_en.tsv").write_text("What is 2 plus 3?\t5\nWhat is 7 minus 2?\t5\n", encoding="utf-8")
    (folder / "mgsm_zh.tsv").write_text("二加三是多少？\t5\n七减二是多少？\t5\n", encoding="utf-8")
    out = tmp_path / "mgsm.tsv"
    run_mgsm_prompts({}, {"folder": str(folder), "languages": ["zh", "en"], "limit": 1}, {"table": str(out)})
    t = pd.read_csv(out, sep="\t")
    assert t.to_dict("records") == [{"id": "mgsm-0", "category": "mgsm", "answer": 5, "zh": "二加三是多少？",
                                     "en": "What is 2 plus 3?"}]


def test_extract_stage_labels_rows_with_the_languages_it_is_given(tmp_path, tiny_organism):
    folder = tiny_organism[0]
    prompts = tmp_path / "prompts.tsv"
    prompts.write_text("id\tcategory\tanswer\ten\tzh\tfr\n"
                       "p-1\taddition\t5\tWhat is 2 plus 3?\t2加3等于多少？\tCombien font 2 plus 3 ?\n", encoding="utf-8")
    out = tmp_path / "acts" / "set.h5"
    params = {"runtime": {"dtype": "float32", "template": "organism"}, "languages": ["zh", "en"],
              "batch_size": 2, "dtype": "float32", "layers": "all", "study_layers": [], "shard": None}
    inputs = {"model": str(folder), "prompts": str(prompts),
              "templates": str(ROOT / "resources/prompts/templates.yaml")}
    run_extract_activations(inputs, params, {"store": str(out)}, wildcards={"model": "tiny"}, threads=1)
    with ActivationStore(out) as st:
        assert st.prompts[["prompt_id", "lang"]].values.tolist() == [["p-1", "zh"], ["p-1", "en"]]
        assert st.attrs["prompt_file"] == str(prompts) and st.attrs["model"] == "tiny"
        assert st.attrs["template"] == "organism" and st.num_layers == 2
