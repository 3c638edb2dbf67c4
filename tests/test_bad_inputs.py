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
  - rule-level errors (``RULE_*``) run a single job: the failing rule's outputs do not exist, no
    temporary or partial file is left, and every other file under ``results/`` is byte-for-byte
    the same file as before (same size and mtime: the earlier rules' legit outputs in the
    cases on the session's tiny run, none at all in the model-preparation cases).

The cases that need a trained model (``RULE_TINY``) share one partial tiny run (``tiny_inputs``:
the tiny organism trained once, its prompt set, activation store and the masks of layers 2 and 3,
nothing else): each breaks one thing in its own copy (truncates or copies an HDF5 file,
swaps the model's weights for a pickle, drops a tokenizer file, edits the prompt table a store
was built from) and asks for one target whose job must fail.

The table is documented in the README ("Bad input and what you see").
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import yaml

TINY = "organism-tiny"
HEADER = "id\tcategory\tanswer\ten\tzh"
ROW1 = "add-01\tadd\t5\tWhat is 2 plus 3?\t二加三等于几？"
ROW2 = "sub-01\tsub\t4\tWhat is 7 minus 3?\t七减三等于几？"
ERROR_PREFIXES = ("zhunt config error: ", "zhunt error: ")
NOT_GGUF = "PK\x03\x04 a zip archive, not a GGUF\n"  # its hash is pinned: only the magic bytes are wrong


@dataclasses.dataclass
class Case:
    id: str
    needle: str
    override: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)  # relative path -> text
    kind: str = "PARSE"  # or a RULE_* setup below
    target: tuple = ()
    env: dict | None = None
    setup: object = None  # RULE_TINY: setup(wd) breaks one thing in a copy of the tiny run
    rule: str = ""  # RULE_TINY: the rule whose (single) job fails
    outputs: tuple = ()  # RULE_TINY: that job's outputs (deleted first, absent after)
    also: str = ""  # a second part of the line (after a value the test cannot know, e.g. a token count)


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


def source_case(id, needle, source, name=TINY, **kw):
    """A model entry whose ``source`` is bad (the tiny organism's, or a new entry ``name``)."""
    entry = {"source": source} if name == TINY else {"source": source, "architecture": "llama"}
    return Case(id, needle, {"models": {name: entry}}, **kw)


def train_case(id, needle, **train):
    return source_case(id, needle, {"train": train})


def truncate_file(rel):
    def setup(wd):
        truncate(wd / rel)
    return setup


def copy_file(src, dst):
    def setup(wd):
        (wd / dst).write_bytes((wd / src).read_bytes())
    return setup


def pickled_weights(wd):
    """A pickle named model.safetensors (what a renamed torch.save file looks like)."""
    import pickle

    (wd / f"resources/models/{TINY}/model.safetensors").write_bytes(pickle.dumps({"w": [1.0] * 64}, protocol=2))


def corrupt_weights(wd):
    path = wd / f"resources/models/{TINY}/model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"\x00" * 64 + data[72:])  # the JSON header is gone


def drop_tokenizer(wd):
    (wd / f"resources/models/{TINY}/tokenizer.json").unlink()


def other_prompt_table(wd):
    """The generated table's content changes after the store was built from it (one problem
    fewer), its mtime does not: no rule sees a reason to rebuild the store."""
    import os

    table = wd / f"results/{TINY}/prompts/organism.tsv"
    st = table.stat()
    lines = table.read_text(encoding="utf-8").splitlines()
    table.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns))


def long_prompt_table(wd):
    """A hand-written table for the tiny organism (context 128) with one 300-token prompt."""
    rows = [HEADER] + [f"add-{i:02d}\tadd\t{i + 2}\tWhat is {i} plus 2?\t{i}加2等于多少？" for i in range(1, 7)]
    rows[3] = rows[3].replace("What is 3 plus 2?", "What is 3 plus 2? " + " ".join(["Think it over again."] * 60))
    (wd / "long.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


LONG_PROMPTS = {"prompts": {"long": {"path": "long.tsv", "languages": ["en", "zh"]}},
                "models": {TINY: {"promptset": "long"}}}
STORE = f"results/{TINY}/activations/organism.h5"
# the outputs of rule decomposition (a cheap rule that reads a store and a mask)
DECOMPOSITION_OUTPUTS = (f"results/{TINY}/decomposition/R.tsv", f"results/{TINY}/decomposition/R.md",
                         f"results/{TINY}/figures/decomposition_R.pdf",
                         f"results/{TINY}/figures/decomposition_R.png")
MASK_L2 = (f"results/{TINY}/masks/L2.h5",)


def decomposition_case(id, needle, setup):
    return Case(id, needle, kind="RULE_TINY", target=DECOMPOSITION_OUTPUTS[:1], setup=setup,
                rule="decomposition", outputs=DECOMPOSITION_OUTPUTS)


def model_folder_case(id, needle, setup):
    """The model folder is broken after the run; rebuilding one mask must load it and fail."""
    return Case(id, needle, kind="RULE_TINY", target=MASK_L2, setup=setup, rule="build_masks", outputs=MASK_L2)


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
    Case("generated-prompts-for-a-gguf-model",
         "prompts.organism: a generated prompt set exists only for an organism (or a random model on its "
         "tokenizer); gemma3-270m is of source kind 'gguf_package'",
         {"analyze": ["gemma3-270m"], "models": {"gemma3-270m": {"promptset": "organism"}}}),
    Case("unknown-model-name", "analyze[0]: unknown model name 'nosuchmodel'",
         {"analyze": ["nosuchmodel"]}),
    Case("unsupported-architecture", f"models.{TINY}.architecture: 'gpt2' is not one of",
         {"models": {TINY: {"architecture": "gpt2"}}}),
    Case("lambda-not-positive",
         f"models.{TINY}.study.ard.lambdas[1]: 0.0 is less than or equal to the minimum of 0",
         study(ard={"lambdas": [0.01, 0.0]})),
    Case("lambda-list-empty", f"models.{TINY}.study.ard.lambdas: [] should be non-empty",
         study(ard={"lambdas": []})),
    # nested per-model overrides are validated as the merged study (zhunt.config.check_schema)
    Case("layer-das-stride-zero", f"models.{TINY}.study.layer_das.every: 0 is less than the minimum of 1",
         study(layer_das={"every": 0})),
    Case("layer-das-key-typo", f"models.{TINY}.study.layer_das.evry: unknown key (did you mean 'every'?)",
         study(layer_das={"evry": 2})),
    Case("das-steps-zero", f"models.{TINY}.study.patching.das.steps: 0 is less than the minimum of 1",
         study(patching={"das": {"steps": 0}})),
    Case("unknown-key", "study.primery_layer: unknown key (did you mean 'primary_layer'?)",
         {"study": {"primery_layer": 3}}),
    # ---- prompt-table cells and line endings -----------------------------------------------------
    prompt_case("prompt-answer-beyond-int64",
                "bad.tsv:2: column 'answer': 9223372036854775808 is outside the range answers are stored in",
                HEADER, ROW1.replace("\t5\t", "\t9223372036854775808\t"), ROW2),
    prompt_case("prompt-answer-40-digits", "bad.tsv:3: column 'answer': " + "9" * 40 + " is outside the range",
                HEADER, ROW1, ROW2.replace("\t4\t", "\t" + "9" * 40 + "\t")),
    prompt_case("prompt-quote-wrapped-cell", "bad.tsv:2: column 'en': quote-wrapped cell",
                HEADER, ROW1.replace("What is 2 plus 3?", '"What is 2 plus 3?"'), ROW2),
    Case("prompt-cr-only-line-endings", "bad.tsv:1: the file uses CR-only (classic Mac) line endings",
         prompt_set(HEADER)[0], files={"bad.tsv": "\r".join([HEADER, ROW1, ROW2]) + "\r"}),
    prompt_case("prompt-header-cell-whitespace", "bad.tsv:1: header cell 'id ' has leading or trailing whitespace",
                HEADER.replace("id", "id ", 1), ROW1, ROW2),
    prompt_case("prompt-zero-width-text", "bad.tsv:3: column 'zh': empty text (only invisible characters: U+200B)",
                HEADER, ROW1, "sub-01\tsub\t4\tWhat is 7 minus 3?\t\u200b\u200b"),
    prompt_case("prompt-nul-in-text", "bad.tsv:2: column 'en': text contains a NUL character",
                HEADER, ROW1.replace("2 plus", "2\x00 plus"), ROW2),
    prompt_case("prompt-set-too-small", "bad.tsv: 2 problems in prompt set 'bad' (model organism-tiny): stage "
                "ard_heldout", HEADER, ROW1, ROW2),
    # ---- model sources: one sub-schema per kind --------------------------------------------------
    source_case("source-key-typo", f"models.{TINY}.source.trian: unknown key (did you mean 'train'?)",
                {"trian": {"n_layers": 4}}),
    train_case("train-key-typo", f"models.{TINY}.source.train.n_layer: unknown key (did you mean 'n_layers'?)",
               n_layer=4),
    train_case("train-value-not-integer", f"models.{TINY}.source.train.n_layers: '4' is not of type 'integer'",
               n_layers="4"),
    train_case("train-width-not-integer", f"models.{TINY}.source.train.hidden_size: 64.5 is not of type",
               hidden_size=64.5),
    train_case("train-unknown-op", f"models.{TINY}.source.train.ops[0]: 'divide' is not one of", ops=["divide"]),
    source_case("gguf-sha256-key-typo", "models.bad-gguf.source.sha265: unknown key (did you mean 'sha256'?)",
                {"kind": "gguf", "path": "bad.gguf", "sha265": "0" * 64}, name="bad-gguf"),
    source_case("gguf-path-missing", "models.bad-gguf.source.path: missing: required for source kind 'gguf'",
                {"kind": "gguf"}, name="bad-gguf"),
    source_case("gguf-sha256-malformed", "models.bad-gguf.source.sha256: 'abc' does not match",
                {"kind": "gguf", "path": "bad.gguf", "sha256": "abc"}, name="bad-gguf"),
    source_case("hub-key-of-other-kind", "models.bad-hub.source.path: unknown key (expected one of kind, repo",
                {"kind": "hub", "repo": "Org/Name", "path": "x"}, name="bad-hub"),
    source_case("hub-repo-not-org-name", "models.bad-hub.source.repo: 'just-a-name' does not match",
                {"kind": "hub", "repo": "just-a-name"}, name="bad-hub"),
    source_case("source-kind-unknown", "models.bad-kind.source.kind: 'zip' is not one of",
                {"kind": "zip", "path": "x"}, name="bad-kind"),
    source_case("source-kind-missing", "models.bad-kind.source.kind: missing: required", {"path": "x"},
                name="bad-kind"),
    source_case("folder-remote-code", "models.bad-folder.source.trust_remote_code: True: only a hub source",
                {"kind": "folder", "path": "x", "trust_remote_code": True}, name="bad-folder"),
    # ---- parse-time minimums ----------------------------------------------------------------------
    Case("organism-too-few-problems", "prompts.organism.n: 1 problem in prompt set 'organism' (model "
         f"{TINY}): stage ard_heldout (Exp. C held-out permutation test, zhunt.activations.ard) needs at least 6",
         {"prompts": {"organism": {"n": 1}}}),
    Case("organism-language-not-spoken", f"prompts.organism.languages[1]: 'fr': the organism {TINY} speaks only "
         "en, zh", {"prompts": {"organism": {"languages": ["en", "fr"]}}}),
    Case("analyze-empty", "analyze: [] should be non-empty", {"analyze": []}),
    Case("structure-k-above-head-dim", f"structure.k: k=32 exceeds what {TINY} allows (0 < k <= head_dim=16",
         {"structure": {"k": 32}}),
    Case("structure-qk-anchor-out-of-range", f"structure.qk_anchor: layer 9 out of range for {TINY}",
         {"structure": {"qk_anchor": 9}}),
    train_case("train-shape-from-validated-values",
               f"models.{TINY}.study.primary_layer: layer 2 out of range for {TINY} (2 decoder layers",
               n_layers=2),
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
    source_case("gguf-not-pinned", "models.bad-gguf.source.sha256: not pinned: nothing vouches for bad.gguf",
                {"kind": "gguf", "path": "bad.gguf"}, name="bad-gguf", files={"bad.gguf": "GGUF-ish\n"},
                kind="RULE_MODEL", target=("resources/models/bad-gguf",)),
    source_case("gguf-file-not-gguf", "bad.gguf: not a GGUF file (starts with b'PK\\x03\\x04'",
                {"kind": "gguf", "path": "bad.gguf", "sha256": hashlib.sha256(NOT_GGUF.encode()).hexdigest()},
                name="bad-gguf", files={"bad.gguf": NOT_GGUF},
                kind="RULE_MODEL", target=("resources/models/bad-gguf",)),
    # ---- rule-level on the session's tiny run: one job runs and fails ------------------------------
    decomposition_case("truncated-activation-store", f"{STORE}: not a complete zhunt activation store",
                       truncate_file(STORE)),
    decomposition_case("corrupt-mask-file", f"results/{TINY}/masks/L2.h5: not a readable Z-mask file",
                       truncate_file(MASK_L2[0])),
    decomposition_case("copied-mask-file", f"results/{TINY}/masks/L2.h5: provenance attribute 'layer' is 3, "
                       "expected 2", copy_file(f"results/{TINY}/masks/L3.h5", MASK_L2[0])),
    decomposition_case("store-from-other-prompt-table", f"{STORE}: provenance attribute 'prompt_file_sha256' is",
                       other_prompt_table),
    model_folder_case("weights-pickled", f"resources/models/{TINY}/model.safetensors: not a safetensors file: "
                      "a Python pickle", pickled_weights),
    model_folder_case("weights-corrupt", f"resources/models/{TINY}/model.safetensors: not a safetensors file: "
                      "truncated or corrupt", corrupt_weights),
    model_folder_case("tokenizer-missing", f"resources/models/{TINY}/tokenizer.json: missing: the folder has no "
                      "tokenizer files", drop_tokenizer),
    Case("prompt-beyond-context", "long.tsv:4: prompt 'add-03' (en): ", LONG_PROMPTS, kind="RULE_TINY",
         also=" tokens exceed the model's context of 128 positions (max_position_embeddings)",
         target=(f"results/{TINY}/activations/long.h5",), setup=long_prompt_table, rule="extract_activations",
         outputs=(f"results/{TINY}/activations/long.h5",)),
]


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


# what the RULE_TINY cases need: the model, its prompt set, store and two masks (not the whole DAG)
TINY_INPUTS = (f"resources/models/{TINY}", STORE, *MASK_L2, f"results/{TINY}/masks/L3.h5")


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory, copy_workflow, snakemake_cli):
    """Factory ``clone(dst) -> dst``: a copy (mtimes kept) of one partial tiny run."""
    import shutil

    wd = copy_workflow(tmp_path_factory.mktemp("tiny-inputs") / "wd")
    res = snakemake_cli(wd, *TINY_INPUTS, cores=2, timeout=1500)
    assert res.returncode == 0, res.stderr[-4000:]
    return lambda dst: Path(shutil.copytree(wd, dst, symlinks=True))


@pytest.mark.parametrize("case", [  # the RULE_TINY cases train the tiny organism once: slow
    pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.kind == "RULE_TINY" else []) for c in CASES])
def test_bad_input_is_one_clear_line(case, tmp_path, copy_workflow, snakemake_cli, request):
    if case.kind == "RULE_TINY":
        wd = request.getfixturevalue("tiny_inputs")(tmp_path / "wd")
        for rel in case.outputs:  # not built yet: the job must run (and fail)
            if (wd / rel).exists():
                (wd / rel).unlink()
        case.setup(wd)
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
    assert case.also in lines[0].split(case.needle, 1)[1], f"{lines[0]!r} lacks {case.also!r}"

    if case.kind == "PARSE":
        assert "Select jobs to execute" not in stderr  # stopped before scheduling anything
        assert snapshot(wd) == before_all  # nothing created, changed or removed
        return
    # rule-level: the failing job's outputs are absent, no temporaries, nothing else touched
    rule = case.rule or "prepare_model"
    assert f"Error in rule {rule}:" in stderr and stderr.count("Error in rule ") == 1
    assert snapshot(wd / "results") == before_results
    if case.kind == "RULE_MODEL":
        name = Path(case.target[0]).name
        assert before_results == {}
        models = wd / "resources/models"
        leftovers = sorted(p.name for p in models.iterdir()) if models.exists() else []
        assert leftovers == [], f"{name}: left in resources/models: {leftovers}"
    else:
        for rel in case.outputs:
            assert not (wd / rel).exists(), rel
        for d in {(wd / rel).parent for rel in case.outputs}:
            if d.exists():  # Snakemake removes an output directory the failed job left empty
                assert not [p.name for p in d.iterdir() if p.name.startswith(".")], d
