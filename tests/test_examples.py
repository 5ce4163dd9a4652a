"""Every example runs end to end at a small budget, so none of them rots."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

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


def test_realtime_dqn_minatar(tmp_path):
    out = run_example(
        "realtime_dqn_minatar.py", "--timesteps", "600", "--n-eval-episodes", "0", "--output", str(tmp_path)
    )
    assert "compression: 5.06%" in out  # the MinAtar CNN at width 8 against the [256, 256] teacher (Breakout)
    assert (tmp_path / "student.zip").is_file()


@pytest.mark.slow  # 35 s: the Atari path runs in CI through the CLI's PPO Pong case
def test_realtime_ppo_atari(tmp_path):
    out = run_example(
        "realtime_ppo_atari.py",
        "--timesteps",
        "512",
        "--n-envs",
        "2",
        "--n-eval-episodes",
        "1",
        "--output",
        str(tmp_path),
    )
    assert "compression: 1.69%" in out  # SmallCNN against the Nature-CNN actor, Pong's 6 actions
    assert (tmp_path / "student.zip").is_file()


def test_offline_then_finetune(tmp_path):
    out = run_example(
        "offline_then_finetune.py", "--timesteps", "1500", "--n-eval-episodes", "2", "--output", str(tmp_path)
    )
    assert "student as PPO, fine-tuned" in out
    for name in ("teacher.zip", "student.zip", "student_ppo.zip"):
        assert (tmp_path / name).is_file()


def test_simulator_free(tmp_path):
    out = run_example(
        "simulator_free.py",
        *("--timesteps", "2048", "--iterations", "20", "--n-eval-episodes", "2", "--output", str(tmp_path)),
    )
    assert "agreement on the teacher's states" in out
    assert (tmp_path / "student.zip").is_file()


def test_student_ladder(tmp_path):
    out = run_example("student_ladder.py", "--timesteps", "1024", "--n-eval-episodes", "2", "--output", str(tmp_path))
    assert "1.7pct: width 11, 79 acting parameters" in out
    for name in ("student_1.7pct.zip", "student_5pct.zip", "student_25pct.zip", "ladder.png"):
        assert (tmp_path / name).is_file()


def test_export_and_infer(tmp_path):
    out = run_example("export_and_infer.py", "--timesteps", "512", "--episodes", "2", "--output", str(tmp_path))
    assert "episode 1: return" in out
    assert (tmp_path / "student.onnx").is_file()
