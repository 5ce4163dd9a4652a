"""Fitting in a second process: the students, optimisers and generator come back as a fit here leaves them."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading

import pytest
import torch as th
from stable_baselines3 import DQN, PPO

from sb3_distill.distiller import DistillConfig, Distiller
from sb3_distill.fit_process import FitProcess, _from_bytes, _to_bytes
from sb3_distill.teachers import Teacher
from tests.test_distiller import synthetic_teacher
from tests.test_packing import cnn, minatar_observations, students_for


@pytest.mark.parametrize("algo", [PPO, DQN], ids=str)
def test_packed_minatar_cnn_students_fitted_in_a_process_end_as_fitted_here(algo):
    teacher = synthetic_teacher(algo, "MinAtar/Breakout-v1")
    specs = {"narrow": cnn(3), "wide": cnn(12, net_arch=[8]), "mlp": ("MlpPolicy", {"net_arch": [8]})}
    here = Distiller(Teacher(teacher), students_for(teacher, specs), DistillConfig(epochs=2, batch_size=64), seed=0)
    assert here.packed is not None  # the worker's copy packs them too (its extractors are new objects)
    there = copy.deepcopy(here)
    worker = FitProcess(there)
    try:
        for seed in range(3):
            obs, targets = here.label(minatar_observations(256, seed=seed))
            expected = here.fit(obs, targets, progress_remaining=0.5)
            metrics = worker.submit(obs, targets, 0.5, epochs=2, label_seconds=0.0).result()
            assert metrics["students"] == expected["students"]
    finally:
        worker.close()
    for name, student in here.students.items():
        for mine, theirs in zip(student.parameters(), there.students[name].parameters(), strict=True):
            assert th.equal(mine, theirs), name
    assert here.rng.bit_generator.state == there.rng.bit_generator.state
    assert there.total_time_s > 0


def test_a_distiller_that_cannot_be_pickled_is_refused_before_any_fit():
    teacher = synthetic_teacher(PPO)
    students = students_for(teacher, {"a": ("MlpPolicy", {"net_arch": [4]})})
    students["a"].lock = threading.Lock()  # no process can receive a lock
    distiller = Distiller(Teacher(teacher), students, DistillConfig(learning_rate=lambda progress: 1e-3 * progress))
    with pytest.raises(ValueError, match=r"background=.process. needs .* pickled"):
        FitProcess(distiller)
    del students["a"].lock
    FitProcess(distiller).close()  # a lambda schedule goes (cloudpickle, as SB3 saves)


SCRIPT = """
import multiprocessing
from stable_baselines3 import PPO
from sb3_distill import RealTimeDistillCallback
from sb3_distill.fit_process import FitProcess
if {forkserver}:  # as on macOS and Windows, or with CUDA students
    FitProcess._context = staticmethod(lambda distiller: multiprocessing.get_context("forkserver"))
class Counting(RealTimeDistillCallback):
    def _on_step(self):
        print("stepped", flush=True)
        return True
teacher = PPO("MlpPolicy", "CartPole-v1", n_steps=64, seed=0)
distill = Counting(student="MlpPolicy", background="process")
teacher.learn(512, callback=distill)
print("distilled", distill.n_distillations, flush=True)
"""


@pytest.mark.parametrize("forkserver", [False, True], ids=["forked", "forkserver"])
def test_a_script_without_the_main_guard(tmp_path, forkserver):
    """Forked (Linux, CPU students) it trains; from a fork server it fails clearly before the first step."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(forkserver=forkserver))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if forkserver:
        assert done.returncode != 0
        assert "if __name__ == '__main__':" in done.stderr
        assert "stepped" not in done.stdout
    else:
        assert done.returncode == 0, done.stderr
        assert "distilled 4" in done.stdout  # one in the foreground (the random-number check), three forked


def test_tensors_travel_with_their_values_dtypes_and_layout():
    frames = th.randint(0, 255, (8, 4, 10, 10), dtype=th.uint8).contiguous(memory_format=th.channels_last)
    sent = {
        "frames": frames,
        "step": th.tensor(3.0),
        "strided": th.arange(10)[::2],
        "bfloat16": th.ones(3, dtype=th.bfloat16),  # no NumPy dtype: pickled as torch does
        "parameter": th.nn.Parameter(th.ones(2)),
    }
    received = _from_bytes(_to_bytes(sent))
    for key, tensor in sent.items():
        assert type(received[key]) is type(tensor)
        assert received[key].dtype == tensor.dtype
        assert th.equal(received[key], tensor)
    assert received["frames"].is_contiguous(memory_format=th.channels_last)
    received["frames"].add_(1)  # writable, and not the sender's memory
    assert not th.equal(received["frames"], frames)
