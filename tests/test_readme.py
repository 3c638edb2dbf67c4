"""The README's test command is the one .ci/run executes."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text().splitlines()
    command = next(line for line in ci if line.startswith("python3 -m venv"))
    assert command in (ROOT / "README.md").read_text()
