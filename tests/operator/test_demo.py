"""The README's main command, for real: `stilts run examples/demo.yaml`, interrupted once and resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_demo_interrupted_then_resumed_ends_with_the_report(tmp_path):
    cmd = [sys.executable, "-m", "stilts.cli", "run", str(REPO / "examples" / "demo.yaml"), "--root", str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in first.stdout:  # interrupt once the first job is done and others are running
        seen.append(line)
        if "finished" in line:
            time.sleep(3)
            first.send_signal(signal.SIGINT)
            break
    rest, _ = first.communicate(timeout=120)
    assert first.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    assert not subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout, "no trainer left behind"

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert second.returncode == 0, second.stdout[-4000:]
    assert "1 already complete" in second.stdout
    run_dir = tmp_path / "demo"
    report = json.loads((run_dir / "report.json").read_text())
    english = [v["en"]["mean"] for v in report["accuracy"].values()]
    assert english and min(english) > 0.6, report["accuracy"]   # chance is 1/3
    assert len(report["languages"]) == 16                       # 15 + average
    assert (run_dir / "heatmap.png").stat().st_size > 10_000
    manifest = json.loads((run_dir / "plan.json").read_text())
    assert all(row["status"] == "Succeeded" for row in manifest["jobs"])
