"""The README's code runs as written: every fenced block, in order, in one empty directory.

- ```python blocks run as scripts (a fresh interpreter each); one whose first line is
  ``# NAME.py`` is that file, written for the blocks after it to run.
- ```sh blocks run in bash, with this venv's ``bin`` first on PATH (``zephyr-arrow``, ``python``).
- A ```text block right after one of those is its output: stdout must be exactly that.
  Other ```text blocks (an excerpt, a log line) are not checked.

Later blocks use what earlier ones made (the quick start writes ``data/``), as a reader
pasting them in order would. The setup commands (indented, not fenced) create venvs and
install the package; CI runs the test one itself, checked here against ``.ci/run``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
SCRIPT_NAME = re.compile(r"# (\w+\.py)\n")


def blocks() -> list[tuple[int, str, str]]:
    """(line, language, code) of each fenced block of the README, in order."""
    text = (REPO / "README.md").read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def test_every_block_runs_and_prints_what_the_readme_shows(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # the Ray block starts its own
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    found = blocks()
    assert {language for _, language, _ in found} == {"python", "sh", "text"}
    previous: tuple[int, str] | None = None  # (line, stdout) of the block just run
    for line, language, code in found:
        if language == "text":
            if previous is not None:
                assert previous[1] == code, f"README line {previous[0]} printed:\n{previous[1]}\nnot what line {line} shows"
            previous = None
            continue
        previous = None
        script = SCRIPT_NAME.match(code)
        if language == "python" and script:
            (tmp_path / script.group(1)).write_text(code)
            continue
        if language == "python":
            (tmp_path / "block.py").write_text(code)
            command = [sys.executable, "block.py"]
        else:
            command = ["bash", "-euo", "pipefail", "-c", code]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"README line {line} ({language}) failed:\n{result.stderr[-3000:]}"
        previous = (line, result.stdout)


def test_the_readme_test_command_is_what_ci_runs():
    readme_commands = [line.strip() for line in (REPO / "README.md").read_text().splitlines() if line.endswith("-m pytest")]
    ci_commands = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.endswith("-m pytest")]
    assert readme_commands == ci_commands == [
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest"
    ]
