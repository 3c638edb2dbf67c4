"""Bad inputs through the Snakemake CLI: one clear error line, nothing written under results/.

Every case runs ``snakemake`` (not a dry run) in its own copy of the workflow with the tiny
config plus a per-case override file (``--configfile tests/tiny/config.yaml override.yaml``) and
asserts:

* a non-zero exit status and no Python traceback on stderr;
* exactly one stderr line starting with ``zhunt config error:`` / ``zhunt error:``, and it
  contains the case's needle, which names the file (``path:line``) or the config key;
* nothing written:
  - config and prompt-table errors (``PARSE``) stop while the Snakefile is parsed: no file in the
    work directory was created, changed or removed (``.snakemake/`` excepted: Snakemake's own
    log of the attempt), so no ``results/``, ``logs/`` or ``resources/models/``;
  - rule-level errors (``RULE``) run a single job: the failing rule's outputs do not exist, no
    temporary or partial file is left, and every other file under ``results/`` is byte-for-byte
    the same file as before (same size and mtime: the earlier rules' legit outputs in the
    HDF5 cases, none at all in the model-preparation cases).

The table is documented in the README ("Bad input and what you see").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

TINY = "organism-tiny"
HEADER = "id\tcategory\tanswer\ten\tzh"
ROW1 = "add-01\tadd\t5\tWhat is 2 plus 3?\t二加三等于几？"
ROW2 = "sub-01\tsub\t4\tWhat is 7 minus 3?\t七减三等于几？"
ERROR_PREFIXES = ("zhunt config error: ", "zhunt error: ")


@dataclasses.dataclass
class Case:
    id: str
    needle: str
    override: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)  # relative path -> text
    kind: str = "PARSE"  # or a RULE_* setup below
    target: tuple = ()
    env: dict | None = None
    corrupt: str = ""  # RULE_HDF5: the input file that gets truncated


def study(**kw) -> dict:
    return {"models": {TINY: {"study": kw}}}


def prompt_set(*lines, languages=("en", "zh")) -> tuple[dict, dict]:
    """(override, files): the tiny model reads the hand-written table bad.tsv."""
    override = {"prompts": {"bad": {"path": "bad.tsv", "languages": list(languages)}},
                "models": {TINY: {"promptset": "bad"}}}
    return override, {"bad.tsv": "\n".join(lines) + "\n"}


def prompt_case(id, needle, *lines):
    override, files = prompt_set(*lines)
    return Case(id, needle, override, files)


CASES = [
    # ---- prompt tables (validated while the Snakefile is parsed) ------------------------------
    prompt_case("prompt-malformed-row", "bad.tsv:3: malformed row: expected 5 tab-separated fields",
                HEADER, ROW1, "sub-01\tsub\t4\tWhat is 7 minus 3?"),
    prompt_case("prompt-missing-language-column", "bad.tsv:1: missing language column 'zh'",
                "id\tcategory\tanswer\ten", "add-01\tadd\t5\tWhat is 2 plus 3?"),
    prompt_case("prompt-duplicate-id", "bad.tsv:3: duplicate id 'add-01' (first used on line 2)",
                HEADER, ROW1, "add-01\tadd\t6\tWhat is 3 plus 3?\t三加三等于几？"),
    prompt_case("prompt-empty-text", "bad.tsv:3: column 'zh': empty text",
                HEADER, ROW1, "sub-01\tsub\t4\tWhat is 7 minus 3?\t"),
    prompt_case("prompt-set-empty", "bad.tsv:1: empty table: the header is not followed by any problem",
                HEADER),
    prompt_case("prompt-non-integer-answer", "bad.tsv:2: column 'answer': 'five' is not an integer",
                HEADER, ROW1.replace("\t5\t", "\tfive\t"), ROW2),
    prompt_case("prompt-unknown-language-column", "bad.tsv:1: unknown language column 'xx'",
                HEADER.replace("zh", "xx"), ROW1),
    Case("prompt-file-missing", "nosuch.tsv: file not found",
         {"prompts": {"bad": {"path": "nosuch.tsv", "languages": ["en", "zh"]}}}),
    # ---- config keys ---------------------------------------------------------------------------
    Case("unknown-language", "prompts.organism.languages[1]: 'xx' is not one of",
         {"prompts": {"organism": {"languages": ["en", "xx"]}}}),
    Case("layer-out-of-range",
         f"models.{TINY}.study.primary_layer: layer 7 out of range for {TINY} (4 decoder layers: 0..3)",
         study(primary_layer=7)),
    Case("ard-layer-out-of-range", f"models.{TINY}.study.ard.layers[1]: layer 4 out of range",
         study(ard={"layers": [2, 4]})),
    Case("k-not-below-d", f"models.{TINY}.study.phase2_k[1]: k=64 must be < d=64",
         study(phase2_k=[4, 64], mask_kinds=["multihead"])),
    Case("k-above-head-dim", f"models.{TINY}.study.patch_k[1]: k=32 exceeds head_dim=16",
         study(patch_k=[4, 32])),
    Case("k-not-positive", f"models.{TINY}.study.patch_k[0]: 0 is less than the minimum of 1",
         study(patch_k=[0])),
    Case("unknown-model-name", "analyze[0]: unknown model name 'nosuchmodel'",
         {"analyze": ["nosuchmodel"]}),
    Case("unsupported-architecture", f"models.{TINY}.architecture: 'gpt2' is not one of",
         {"models": {TINY: {"architecture": "gpt2"}}}),
    Case("lambda-not-positive",
         f"models.{TINY}.study.ard.lambdas[1]: 0.0 is less than or equal to the minimum of 0",
         study(ard={"lambdas": [0.01, 0.0]})),
    Case("lambda-list-empty", f"models.{TINY}.study.ard.lambdas: [] should be non-empty",
         study(ard={"lambdas": []})),
    Case("unknown-key", "study: Additional properties are not allowed ('primery_layer' was unexpected)",
         {"study": {"primery_layer": 3}}),
    # ---- rule-level: only the failing rule's job runs ------------------------------------------
    Case("gguf-checksum-mismatch",
         "models.bad-gguf.source.sha256: SHA256 mismatch for bad.gguf: expected " + "0" * 64,
         {"models": {"bad-gguf": {"source": {"kind": "gguf", "path": "bad.gguf", "sha256": "0" * 64},
                                  "architecture": "llama"}}},
         files={"bad.gguf": "GGUF but not really\n"}, kind="RULE_MODEL",
         target=("resources/models/bad-gguf",)),
    Case("hub-offline-no-cache",
         "models.offline-hub.source.repo: cannot download 'zhunt-tests/not-cached' "
         "(no network / not in the local Hugging Face cache)",
         {"models": {"offline-hub": {"source": {"kind": "hub", "repo": "zhunt-tests/not-cached"},
                                     "architecture": "qwen2"}}},
         kind="RULE_MODEL", target=("resources/models/offline-hub",),
         env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "{tmp}/hf-home"}),
    Case("truncated-activation-store",
         f"results/{TINY}/activations/organism.h5: not a complete zhunt activation store",
         kind="RULE_HDF5", target=(f"results/{TINY}/decomposition/R.tsv",),
         corrupt=f"results/{TINY}/activations/organism.h5"),
    Case("corrupt-mask-file", f"results/{TINY}/masks/L2.h5: not a readable Z-mask file",
         kind="RULE_HDF5", target=(f"results/{TINY}/decomposition/R.tsv",),
         corrupt=f"results/{TINY}/masks/L2.h5"),
]
# the outputs of rule decomposition (the RULE_HDF5 target)
DECOMPOSITION_OUTPUTS = [f"results/{TINY}/decomposition/R.tsv", f"results/{TINY}/decomposition/R.md",
                         f"results/{TINY}/figures/decomposition_R.pdf",
                         f"results/{TINY}/figures/decomposition_R.png"]


def snapshot(root: Path, skip=(".snakemake",)) -> dict:
    """{relative path: (size, mtime_ns)} of every file under ``root`` (``skip``ped top dirs aside)."""
    if not root.exists():
        return {}
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if rel.parts[0] in skip or p.is_dir():
            continue
        st = p.lstat()
        out[str(rel)] = (st.st_size, st.st_mtime_ns)
    return out


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(ERROR_PREFIXES)]


def truncate(path: Path) -> None:
    """Cut an HDF5 file to half its size (a copy interrupted mid-transfer)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case", [  # the HDF5 cases need the session's tiny run: slow
    pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.kind == "RULE_HDF5" else []) for c in CASES])
def test_bad_input_is_one_clear_line(case, tmp_path, copy_workflow, snakemake_cli, request):
    if case.kind == "RULE_HDF5":
        wd = request.getfixturevalue("clone_tiny")(tmp_path / "wd")
        for rel in DECOMPOSITION_OUTPUTS:  # not built yet: the job must run (and fail)
            (wd / rel).unlink()
        truncate(wd / case.corrupt)
    else:
        wd = copy_workflow(tmp_path / "wd")
        for rel, text in case.files.items():
            (wd / rel).write_text(text, encoding="utf-8")
    (wd / "override.yaml").write_text(yaml.safe_dump(case.override, allow_unicode=True))
    env = {k: v.format(tmp=tmp_path) for k, v in (case.env or {}).items()} or None

    before_all, before_results = snapshot(wd), snapshot(wd / "results")
    res = snakemake_cli(wd, *case.target, cores=1, timeout=300, env=env,
                        configfiles=("tests/tiny/config.yaml", "override.yaml"))
    stderr = res.stderr

    assert res.returncode != 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected one zhunt error line, got {lines}\n{stderr[-3000:]}"
    assert case.needle in lines[0], f"{lines[0]!r} lacks {case.needle!r}"

    if case.kind == "PARSE":
        assert "Select jobs to execute" not in stderr  # stopped before scheduling anything
        assert snapshot(wd) == before_all  # nothing created, changed or removed
        return
    # rule-level: the failing job's outputs are absent, no temporaries, nothing else touched
    rule = {"RULE_MODEL": "prepare_model", "RULE_HDF5": "decomposition"}[case.kind]
    assert f"Error in rule {rule}:" in stderr and stderr.count("Error in rule ") == 1
    assert snapshot(wd / "results") == before_results
    if case.kind == "RULE_MODEL":
        name = Path(case.target[0]).name
        assert before_results == {}
        models = wd / "resources/models"
        leftovers = sorted(p.name for p in models.iterdir()) if models.exists() else []
        assert leftovers == [], f"{name}: left in resources/models: {leftovers}"
    else:
        for rel in DECOMPOSITION_OUTPUTS:
            assert not (wd / rel).exists(), rel
        for d in {(wd / rel).parent for rel in DECOMPOSITION_OUTPUTS}:
            if d.exists():  # Snakemake removes an output directory the failed job left empty
                assert not [p.name for p in d.iterdir() if p.name.startswith(".")], d
