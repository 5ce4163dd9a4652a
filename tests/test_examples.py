"""Every example runs end to end at a small budget, so none of them rots."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_realtime_ppo_cartpole_demo(tmp_path):
    out = run_example(
        "realtime_ppo_cartpole.py", "--timesteps", "4096", "--n-eval-episodes", "3", "--output", str(tmp_path)
    )
    for row in ("teacher mean return", "student mean return", "student / teacher", "action agreement", "compression"):
        assert row in out
    assert "1.87%" in out  # a [12] student against PPO's [64, 64] actor on CartPole
    assert (tmp_path / "student.zip").is_file()
