"""Atomic files: cut files are named, temporaries of killed writers are cleaned up, unwritable folders fail early."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from stable_baselines3 import PPO

from sb3_distill import RealTimeDistillCallback, distill, load_student, load_teacher, save_student
from sb3_distill.cli import main
from sb3_distill.serialization import atomic_write_bytes, check_save_path

WRITER = """
import sys
from sb3_distill.serialization import atomic_write_bytes
data = bytes(64 * 1024 * 1024)
print("ready", flush=True)
while True:
    atomic_write_bytes(data, sys.argv[1])
"""


def temporaries(folder):
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


def test_temporaries_left_by_killed_writers_are_removed_by_the_next_save(tmp_path):
    target = tmp_path / "big.bin"
    left = 0
    for _ in range(10):  # until a kill lands mid-write
        if left:
            break
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE)
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        left += len(temporaries(tmp_path))
    assert left, "no kill landed mid-write"
    live = tmp_path / f".big.bin.{os.getpid()}.inprogress.tmp"  # a live writer's temporary is never touched
    live.write_bytes(b"")
    atomic_write_bytes(b"complete", target)
    assert target.read_bytes() == b"complete"
    assert temporaries(tmp_path) == [live.name]


def test_a_file_cut_short_is_named_in_the_error(tmp_path, capsys):
    teacher = PPO("MlpPolicy", "CartPole-v1", seed=0)
    student = distill(teacher, "MlpPolicy", "CartPole-v1", 256, student_kwargs={"net_arch": [8]}, seed=0)
    path = tmp_path / "student.zip"
    save_student(student, path)
    teacher.save(tmp_path / "teacher.zip")
    for name in ("student.zip", "teacher.zip"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"cut_student\.zip.*damaged"):
        load_student(tmp_path / "cut_student.zip")
    with pytest.raises(ValueError, match=r"cut_teacher\.zip"):
        load_teacher(tmp_path / "cut_teacher.zip")
    assert main(["export", str(tmp_path / "cut_student.zip"), "-o", str(tmp_path / "s.onnx")]) == 2
    assert "cut_student.zip" in capsys.readouterr().err
    assert not (tmp_path / "s.onnx").exists()


def _writable(folder: str) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@pytest.mark.skipif(not os.path.isdir("/sys") or _writable("/sys"), reason="needs a read-only folder")
def test_an_existing_folder_that_cannot_be_written_fails_before_the_first_step():
    readonly = "/sys"  # read-only even for root, unlike a chmod'ed folder
    with pytest.raises(PermissionError, match="not writable"):
        check_save_path(os.path.join(readonly, "student.zip"))
    teacher = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=0)
    with pytest.raises(PermissionError, match="not writable"):
        teacher.learn(128, callback=RealTimeDistillCallback("MlpPolicy", save_path=readonly))
    assert teacher.num_timesteps == 0
