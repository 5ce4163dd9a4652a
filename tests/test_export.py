"""Exported students (ONNX, TorchScript) act as the student does, without SB3."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import onnxruntime
import pytest
import torch as th
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

from sb3_distill import RealTimeDistillCallback, export, save_student, wrap_env
from sb3_distill.architectures import SmallCNN
from sb3_distill.cli import main
from tests.conftest import make_teacher


def collect(env, n: int) -> np.ndarray:
    """``n`` raw observations, as the env wrappers give them, under random actions."""
    obs, batches = env.reset(), []
    while sum(len(batch) for batch in batches) < n:
        batches.append(obs)
        obs, *_ = env.step(np.array([env.action_space.sample() for _ in range(env.num_envs)]))
    return np.concatenate(batches)[:n]


def run_exported(path, fmt: str, obs: np.ndarray, with_scores: bool = False):
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path))
        outputs = session.run(None, {"obs": obs})
    else:
        module = th.jit.load(str(path))
        result = module(th.as_tensor(obs))
        outputs = [r.numpy() for r in result] if isinstance(result, tuple) else [result.numpy()]
    return outputs if with_scores else outputs[0]


def distilled(teacher, steps: int, **kwargs):
    distill = RealTimeDistillCallback(seed=0, **kwargs)
    teacher.learn(steps, callback=distill)
    return distill.student


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_mlp_student_under_vec_normalize(fmt, tmp_path):
    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=8, seed=0), norm_reward=False)
    teacher = make_teacher("ppo", seed=0)
    teacher.set_env(venv)
    student = distilled(teacher, 4096, student="MlpPolicy", student_kwargs={"net_arch": [8]})
    save_student(student, tmp_path / "student.zip")
    # From the file, as `sb3-distill export` does: raw observations in, the recorded statistics inside.
    path = export(tmp_path / "student.zip", tmp_path / f"student.{fmt}", format=fmt, with_scores=True)
    raw = collect(make_vec_env("CartPole-v1", n_envs=4, seed=3), 400).astype(np.float32)
    actions, scores = run_exported(path, fmt, raw, with_scores=True)
    expected = student.predict(wrap_env(make_vec_env("CartPole-v1"), student).normalize_obs(raw), deterministic=True)[0]
    assert actions.dtype == np.int64
    assert scores.shape == (400, 2)
    np.testing.assert_array_equal(actions, expected)
    assert 0 < expected.mean() < 1  # both actions occur: the comparison is not trivial


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_cnn_student_on_raw_atari_frames(fmt, tmp_path):
    import ale_py

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=2, seed=0), n_stack=4)
    teacher = PPO("CnnPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    student = distilled(
        teacher,
        128,
        student="CnnPolicy",
        student_kwargs={"features_extractor_class": SmallCNN, "net_arch": []},
    )
    path = export(student, tmp_path / f"pong.{fmt}", format=fmt)
    frames = collect(env, 300)  # uint8, (84, 84, 4): channel-last, as the wrappers give them
    assert frames.dtype == np.uint8
    assert frames.shape[1:] == (84, 84, 4)
    np.testing.assert_array_equal(run_exported(path, fmt, frames), student.predict(frames, deterministic=True)[0])


def test_continuous_actions_are_clipped_or_rescaled_as_predict_does(tmp_path):
    teacher = SAC("MlpPolicy", "Pendulum-v1", learning_starts=100, seed=0, device="cpu")
    student = distilled(teacher, 300, student="MlpPolicy", student_kwargs={"net_arch": [16]})
    path = export(student, tmp_path / "sac.onnx")
    obs = collect(make_vec_env("Pendulum-v1", seed=1), 200).astype(np.float32)
    np.testing.assert_allclose(run_exported(path, "onnx", obs), student.predict(obs, deterministic=True)[0], atol=1e-5)


def test_bad_input_writes_nothing(tmp_path, capsys):
    student = distilled(make_teacher("ppo", seed=0), 256, student="MlpPolicy", student_kwargs={"net_arch": [4]})
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export(student, tmp_path / "s.tflite", format="tflite")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(student, tmp_path / "missing" / "s.onnx")
    teacher_file = tmp_path / "teacher.zip"
    make_teacher("ppo", seed=0).save(teacher_file)
    with pytest.raises(ValueError, match="not a file written by sb3_distill"):
        export(teacher_file, tmp_path / "s.onnx")
    # An existing file is replaced only by a complete export.
    target = tmp_path / "s.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match="use load_teacher"):
        export(teacher_file, target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx", "teacher.zip"]
    # The command line: a clear message and exit code 2.
    assert main(["export", str(teacher_file), "--format", "onnx"]) == 2
    assert "not a file written by sb3_distill" in capsys.readouterr().err


def test_exporting_a_module_student_leaves_the_users_module_trainable(tmp_path):
    from torch import nn

    module = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 2))
    callback = RealTimeDistillCallback(module, seed=0)
    make_teacher("ppo").learn(256, callback=callback)
    export(callback.student, tmp_path / "student.onnx")
    assert module.training
    assert all(p.requires_grad for p in module.parameters())
    loss = module(th.randn(8, 4)).sum()
    loss.backward()  # training on after export
    assert all(p.grad is not None for p in module.parameters())
