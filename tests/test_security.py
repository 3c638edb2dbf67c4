"""Security gates on the code we ship: no unpickling, no remote code, prompts never evaluated.

Scanned: ``src/zhunt/**/*.py``, ``workflow/**/*.py``, ``bench/**/*.py`` (Python syntax trees) and
``Snakefile`` + ``workflow/rules/*.smk`` (Python tokens: Snakemake syntax is not Python).
Forbidden:

* unpickling: importing ``pickle``/``dill``/``joblib``/``shelve``/``marshal``/... ,
  ``torch.load`` without ``weights_only=True``, ``torch.jit.load``, ``numpy.load`` with
  ``allow_pickle`` set, ``pandas.read_pickle``, ``yaml.load`` without a safe loader (and
  ``yaml.unsafe_load``/``full_load``), ``from_pretrained(..., use_safetensors=False)``;
* remote code: ``trust_remote_code`` given any value but ``False`` unless the value is read from
  the model entry's own ``trust_remote_code`` key (the config opt-in);
* evaluating text: the builtins ``eval``/``exec``/``compile``, and ``pandas``-style
  ``.eval(expr)``/``.query(expr)`` with an expression that is not a string literal.

``test_scanner_catches_*`` feed synthetic snippets to the same scanners, so that a scanner that
silently stops matching fails the suite.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal",
                  "jsonpickle"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node) -> str:
    """``a.b.c`` of a Name/Attribute chain ('' for anything else)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _opts_in_from_config(node) -> bool:
    """``trust_remote_code=`` value read from a model entry's own key (``source.get("trust_remote_code", False)``)."""
    return "'trust_remote_code'" in ast.unparse(node) or '"trust_remote_code"' in ast.unparse(node)


def scan_python(source: str, filename: str = "<snippet>") -> list[str]:
    """Findings ``file:line: what`` of one Python source."""
    findings = []

    def hit(node, what):
        findings.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    hit(node, f"imports {alias.name} (unpickling)")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in PICKLE_MODULES:
                hit(node, f"imports from {node.module} (unpickling)")
            for alias in node.names:
                if alias.name in ("read_pickle", "unsafe_load", "full_load"):
                    hit(node, f"imports {alias.name}")
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "trust_remote_code" and not (
                        _is_const(v, False) or _opts_in_from_config(v)):
                    hit(node, "trust_remote_code not False and not the model entry's opt-in")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1] if name else getattr(node.func, "attr", "")
            if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec", "compile"):
                hit(node, f"calls {node.func.id}()")
            elif isinstance(node.func, ast.Attribute) and last in ("eval", "query") and node.args and not (
                    isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                hit(node, f"calls .{last}() on a non-literal expression")
            if name.startswith("torch.") and last == "load":
                if name == "torch.jit.load":
                    hit(node, "torch.jit.load")
                elif not _is_const(_kw(node, "weights_only"), True):
                    hit(node, "torch.load without weights_only=True")
            if last == "load" and name.split(".")[0] in ("np", "numpy"):
                if _kw(node, "allow_pickle") is not None and not _is_const(_kw(node, "allow_pickle"), False):
                    hit(node, "numpy.load with allow_pickle")
            if last == "read_pickle":
                hit(node, "read_pickle")
            if name.split(".")[0] == "yaml" and last in ("unsafe_load", "full_load", "unsafe_load_all"):
                hit(node, f"yaml.{last}")
            if name.split(".")[0] == "yaml" and last in ("load", "load_all"):
                loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
                if loader is None or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                    hit(node, "yaml.load without a safe Loader")
            if last == "from_pretrained" and _is_const(_kw(node, "use_safetensors"), False):
                hit(node, "from_pretrained(use_safetensors=False)")
            trc = _kw(node, "trust_remote_code")
            if trc is not None and not (_is_const(trc, False) or _opts_in_from_config(trc)):
                hit(node, "trust_remote_code not False and not the model entry's opt-in")
    return findings


def scan_snakemake(source: str, filename: str = "<snippet>") -> list[str]:
    """Findings of a Snakefile / .smk (token patterns: Snakemake syntax is not Python)."""
    toks = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER)]
    findings = []
    for i, t in enumerate(toks):
        prev = toks[i - 1].string if i else ""
        nxt = [x.string for x in toks[i + 1:i + 3]]
        where = f"{filename}:{t.start[0]}"
        if t.string in ("eval", "exec", "compile") and nxt[:1] == ["("] and prev != ".":
            findings.append(f"{where}: calls {t.string}()")
        if t.string in PICKLE_MODULES and prev in ("import", "from"):
            findings.append(f"{where}: imports {t.string} (unpickling)")
        if t.string in ("read_pickle", "unsafe_load", "full_load"):
            findings.append(f"{where}: {t.string}")
        if prev == "." and t.string == "load" and i >= 2 and toks[i - 2].string == "torch":
            findings.append(f"{where}: torch.load in a rule file")
        if t.string in ("trust_remote_code", "allow_pickle") and nxt == ["=", "True"]:
            findings.append(f"{where}: {t.string}=True")
    return findings


def _python_files():
    for pattern in ("src/zhunt/**/*.py", "workflow/**/*.py", "bench/**/*.py"):
        yield from sorted(ROOT.glob(pattern))


def _snakemake_files():
    yield ROOT / "Snakefile"
    yield from sorted(ROOT.glob("workflow/rules/*.smk"))


def test_shipped_code_has_no_unsafe_loading_or_evaluation():
    py, smk = list(_python_files()), list(_snakemake_files())
    assert len(py) > 30 and len(smk) > 5  # the globs still find the code
    findings = []
    for p in py:
        findings += scan_python(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
    for p in smk:
        findings += scan_snakemake(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
    assert findings == [], "\n".join(findings)


def test_remote_code_is_off_unless_a_model_entry_opts_in():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    source = schema["properties"]["models"]["additionalProperties"]["properties"]["source"]
    assert source["properties"]["trust_remote_code"]["default"] is False
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    opted_in = [m for m, s in cfg["models"].items() if s["source"].get("trust_remote_code")]
    assert opted_in == []  # the shipped registry trusts no remote code
    # the one place that passes a non-constant value reads it from the model entry
    loader = (ROOT / "src/zhunt/models/loader.py").read_text()
    assert 'trust_remote_code=bool(source.get("trust_remote_code", False))' in loader


BAD_PYTHON = [
    ("import pickle\n", "imports pickle"),
    ("from joblib import load\n", "imports from joblib"),
    ("import dill as d\n", "imports dill"),
    ("x = torch.load(p)\n", "torch.load without weights_only=True"),
    ("x = torch.load(p, weights_only=False)\n", "torch.load without weights_only=True"),
    ("x = torch.jit.load(p)\n", "torch.jit.load"),
    ("a = np.load(p, allow_pickle=True)\n", "numpy.load with allow_pickle"),
    ("a = numpy.load(p, allow_pickle=flag)\n", "numpy.load with allow_pickle"),
    ("df = pd.read_pickle(p)\n", "read_pickle"),
    ("c = yaml.load(text)\n", "yaml.load without a safe Loader"),
    ("c = yaml.load(text, Loader=yaml.Loader)\n", "yaml.load without a safe Loader"),
    ("c = yaml.unsafe_load(text)\n", "yaml.unsafe_load"),
    ("m = Auto.from_pretrained(r, trust_remote_code=True)\n", "trust_remote_code not False"),
    ("kw = dict(trust_remote_code=flag)\n", "trust_remote_code not False"),
    ("kw = {'trust_remote_code': True}\n", "trust_remote_code not False"),
    ("m = Auto.from_pretrained(r, use_safetensors=False)\n", "use_safetensors=False"),
    ("answer = eval(row['answer'])\n", "calls eval()"),
    ("exec(prompt_text)\n", "calls exec()"),
    ("code = compile(text, 'x', 'eval')\n", "calls compile()"),
    ("v = pd.eval(expr)\n", "calls .eval() on a non-literal"),
    ("sub = df.query(user_filter)\n", "calls .query() on a non-literal"),
]
GOOD_PYTHON = [
    "model.eval()\n",
    "x = torch.load(p, weights_only=True)\n",
    "a = np.load(p)\n",
    "a = np.load(p, allow_pickle=False)\n",
    "c = yaml.safe_load(text)\n",
    "c = yaml.load(text, Loader=yaml.SafeLoader)\n",
    "m = Auto.from_pretrained(r, trust_remote_code=False, use_safetensors=True)\n",
    "kw = dict(trust_remote_code=bool(source.get('trust_remote_code', False)))\n",
    "p = re.compile(r'x')\n",
    "sub = df.query('lang == \"en\"')\n",
    "s = 'eval(prompt) and import pickle in a string'\n",
]


@pytest.mark.parametrize("snippet, what", BAD_PYTHON, ids=[b[0].strip() for b in BAD_PYTHON])
def test_scanner_catches_python(snippet, what):
    findings = scan_python(snippet)
    assert len(findings) == 1 and what in findings[0], findings


@pytest.mark.parametrize("snippet", GOOD_PYTHON, ids=[g.strip() for g in GOOD_PYTHON])
def test_scanner_passes_safe_python(snippet):
    assert scan_python(snippet) == []


def test_scanner_catches_snakemake_syntax():
    bad = ("rule x:\n    params:\n        v=lambda wc: eval(config['expr']),\n"
           "    run:\n        import pickle\n        m = torch.load(input[0])\n"
           "        t = dict(trust_remote_code=True)\n        a = np.load(f, allow_pickle=True)\n"
           "        df = pd.read_pickle(f)\n")
    what = [f.split(": ", 1)[1] for f in scan_snakemake(bad)]
    assert what == ["calls eval()", "imports pickle (unpickling)", "torch.load in a rule file",
                    "trust_remote_code=True", "allow_pickle=True", "read_pickle"], what
    good = "rule x:\n    run:\n        model.eval()\n        kw = dict(trust_remote_code=False)\n"
    assert scan_snakemake(good) == []
