"""envs/*.yaml and pyproject.toml must name the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALIASES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _name(req: str) -> str:
    name = re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")
    return ALIASES.get(name, name)


def test_conda_env_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    want = {_name(d) for d in deps}
    for env_file in sorted((ROOT / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        have = set()
        for dep in env["dependencies"]:
            if isinstance(dep, dict):
                have |= {_name(d) for d in dep["pip"] if not d.startswith("-e")}
            elif not dep.startswith(("python=", "pip")) or dep.startswith("pip:"):
                have.add(_name(dep))
        have.discard("python")
        assert have == want, f"{env_file.name}: missing {want - have}, extra {have - want}"
