"""The README's command lines, run as written against tiny runs, so that no flag, path or rank it shows rots.

The lines of the usage sections (running a search, inspecting and exporting, the evaluator) run verbatim,
with ``python`` meaning this interpreter, in a folder that holds the repository's ``run_search.py`` and
``configs/``. Lines that train from a config (``run_search.py --config``, ``python -m evaluator``) get
``TINY`` appended, so that they train tiny networks on synthetic images for seconds instead of minutes;
the lines that read a run (resume, inspect, export, rerank) run as they stand on what those made. The one
line left out joins a Ray cluster (``--address auto``), which the cluster tests cover.
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.search.fakes import TINY_REAL

SECTIONS = ("Running a search", "Inspecting and exporting what a search found", "The evaluator")
TINY = [*TINY_REAL, "search.max_evaluations=6", "search.population_size=3", "search.max_initial=6",
        "executor.kind=serial"]
NEEDS_A_CLUSTER = "--address"


def readme_commands() -> list[str]:
    """Every command line of the bash blocks in ``SECTIONS``, comments stripped, in the README's order."""
    text = (REPO / "README.md").read_text()
    commands = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = section.partition("\n")
        if title.strip().split(" (")[0] not in SECTIONS:
            continue
        for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if line and not line.startswith("#"):
                    commands.append(line)
    return commands


def _argv(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[0] == "python", f"a README line that does not start with python: {command}"
    argv[0] = sys.executable
    trains = argv[1] == "run_search.py" and "--config" in argv or argv[1:3] == ["-m", "evaluator"]
    return argv + [item for kv in TINY for item in ("--set", kv)] if trains else argv


def test_the_readme_has_the_usage_lines():
    commands = readme_commands()
    for expected in ("run_search.py --config", "run_search.py --resume", "search.inspect", "search.export",
                     "search.rerank", "-m evaluator"):
        assert any(expected in c for c in commands), expected


def test_every_readme_command_line_runs(tmp_path):
    for name in ("run_search.py", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    ran = []
    for command in readme_commands():
        if NEEDS_A_CLUSTER in command:
            continue
        if "--from-backup" in command:  # the line is for a damaged journal: damage it
            with open(tmp_path / "runs" / "quick" / "search.sqlite", "r+b") as f:
                f.seek(4096)
                f.write(bytes(range(256)) * 16)
        out = subprocess.run(_argv(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        ran.append(command)
    assert len(ran) >= 10
    assert (tmp_path / "my_layer.py").is_file() and (tmp_path / "evonorm_s0.py").is_file()
    assert (tmp_path / "runs" / "quick" / "report.md").is_file()
    assert list((tmp_path / "runs" / "quick").glob("search.sqlite.damaged-*"))  # --from-backup ran


@pytest.mark.parametrize("command", [c for c in readme_commands() if NEEDS_A_CLUSTER in c])
def test_the_line_left_out_is_only_the_cluster_one(command):
    assert "--address auto" in command
