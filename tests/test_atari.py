"""Distilling from frame-stacked Atari observations (ROMs ship inside ale-py): a few hundred teacher steps on Pong."""

from __future__ import annotations

import copy

import ale_py
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecFrameStack

from sb3_distill import load_student, save_student
from sb3_distill.architectures import SmallCNN
from sb3_distill.distiller import DistillConfig, Distiller
from sb3_distill.students import make_student
from sb3_distill.teachers import Teacher
from tests.conftest import RecordingDistillCallback, kl_to_teacher
from tests.test_distiller import distiller_for, synthetic_teacher

gym.register_envs(ale_py)


def pong(n_envs: int, seed: int = 0) -> VecFrameStack:
    return VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=n_envs, seed=seed), n_stack=4)


TEACHERS = {
    "ppo": lambda: PPO("CnnPolicy", pong(2), n_steps=64, batch_size=64, n_epochs=1, seed=0),
    "dqn": lambda: DQN("CnnPolicy", pong(1), buffer_size=1000, learning_starts=64, train_freq=4, seed=0),
}


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_small_cnn_student_distils_from_frame_stacked_pong(algo, tmp_path):
    teacher = TEACHERS[algo]()
    distill = RecordingDistillCallback(
        student="CnnPolicy",
        student_kwargs={"features_extractor_class": SmallCNN, "net_arch": []},
        batch_size=64,
        seed=0,
        catch_up=200,
    )
    teacher.learn(384, callback=distill)
    # The catch-up memory keeps frames as the teacher's policy takes them: uint8, not 4x larger floats.
    assert distill.memory is not None
    assert distill.memory.obs.dtype == np.uint8
    assert len(distill.memory) == 200

    student = distill.student
    # The student sees what the teacher's policy saw: 4 stacked 84x84 frames, channel-first, uint8.
    assert student.observation_space == teacher.policy.observation_space
    assert student.observation_space.shape == (4, 84, 84)
    assert len(distill.history) >= 2
    last = distill.history[-1]["students"]["student"]
    assert np.isfinite(last["loss"])
    # The student moved towards the (final) teacher on the observations the teacher collected.
    if algo == "ppo":
        obs = teacher.rollout_buffer.observations.reshape(-1, 4, 84, 84)
    else:
        obs = teacher.replay_buffer.observations[: teacher.replay_buffer.pos, 0]
    temperature = distill.distiller.temperature
    before = kl_to_teacher(teacher, distill.initial_students["student"], obs, temperature)
    assert kl_to_teacher(teacher, student, obs, temperature) < 0.8 * before
    # Near the real-time paper's headline: about 1.7-1.9% of the Nature-CNN's acting parameters.
    assert 0.015 < last["compression"] < 0.022

    save_student(student, tmp_path / "pong_student.zip")
    same = load_student(tmp_path / "pong_student.zip")
    obs = pong(2, seed=1).reset()  # raw env observations, channel-last: predict transposes them as SB3 does
    assert obs.shape == (2, 84, 84, 4)
    np.testing.assert_array_equal(student.predict(obs, deterministic=True)[0], same.predict(obs, deterministic=True)[0])


def test_image_batches_update_channels_last_with_the_same_result():
    # The distiller stores uint8 frame batches channels-last on CPU (faster convolutions): the same values,
    # so the students learn exactly what they would from the channels-first batches.
    teacher = TEACHERS["ppo"]()
    env = pong(2, seed=3)
    frames = [env.reset()]
    for _ in range(63):
        frames.append(env.step(np.array([env.action_space.sample() for _ in range(2)]))[0])
    obs = th.as_tensor(np.concatenate(frames).transpose(0, 3, 1, 2).copy())  # as the policy takes them
    view = Teacher(teacher)
    student = make_student(
        "CnnPolicy",
        view.observation_space,
        view.action_space,
        teacher.policy_aliases,
        # Adam at SB3's eps: at the students' default 1e-8, a gradient at rounding level (which the two layouts
        # round differently) already makes a step of up to the learning rate, beyond any float tolerance.
        {"features_extractor_class": SmallCNN, "net_arch": [], "optimizer_kwargs": {"eps": 1e-5}},
        seed=0,
    )
    layouts = {}
    for channels_last in (True, False):
        distiller = Distiller(view, {"s": copy.deepcopy(student)}, DistillConfig(batch_size=32), seed=0)
        assert distiller.channel_first_images  # uint8 frames, channels first
        distiller.channel_first_images = channels_last
        for _ in range(2):
            distiller.update(obs)
        layouts[channels_last] = distiller.students["s"]
    for p_last, p_first in zip(layouts[True].parameters(), layouts[False].parameters(), strict=True):
        assert th.allclose(p_last, p_first, atol=1e-5)
    assert not all(th.equal(a, b) for a, b in zip(student.parameters(), layouts[True].parameters(), strict=True))
    assert not distiller_for(synthetic_teacher()).channel_first_images  # vector observations stay as they are
