"""The command line end to end with the real evaluator: Ctrl-C prints how to resume, the resume finishes."""
import signal
import subprocess
import sys
import time

import search
from evaluator.config import dump_config
from search.journal import Journal, JournalError
from tests.conftest import REPO
from tests.search.fakes import tiny_real_config


def _in_flight(run_dir, rows: int) -> bool:
    try:
        with Journal.open(run_dir, readonly=True) as journal:
            found = journal.rows()
    except JournalError:
        return False
    return len(found) >= rows and found[-1].status == "running"


def test_ctrl_c_then_resume_from_the_command_line(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(dump_config(tiny_real_config("search.max_evaluations=5")))
    run_dir = tmp_path / "run"
    cli = [sys.executable, str(REPO / "run_search.py")]
    proc = subprocess.Popen([*cli, "--config", str(config), "--out", str(run_dir)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _in_flight(run_dir, rows=2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"run_search.py --resume {run_dir}" in err
    assert "abandoned" in {r.status for r in search.open_run(run_dir).candidates()}

    done = subprocess.run([*cli, "--resume", str(run_dir), "--quiet"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "stopped: max_evaluations" in done.stdout and "reference bn_relu:" in done.stdout
    rows = search.open_run(run_dir).candidates()
    assert all(r.finished for r in rows) and len(search.open_run(run_dir).sessions()) == 2
