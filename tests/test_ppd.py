"""Proximal Policy Distillation: PPO on the student's own rollouts plus the clipped distillation term."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env

from sb3_distill import ProximalPolicyDistillation
from sb3_distill.agents import load_vec_normalize
from tests.conftest import CARTPOLE, PUBLISHED, cartpole_return, make_teacher

# The teachers' CartPole PPO settings, with an [8] student.
STUDENT_PPO = {**CARTPOLE["ppo"][2], "policy_kwargs": {"net_arch": [8]}}


@pytest.fixture
def teacher(published_ppo):
    return published_ppo


def cartpole(n_envs: int = 8, seed: int = 0):
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)


def test_distillation_term_makes_a_small_student_learn_fast(teacher, tmp_path):
    """Measured (published PPO teacher, 10k steps, seeds 0-2): PPD 500 / 500 / 500 with lambda=1, 18.5 / 17.2 / 21.1
    with lambda=0 (plain PPO on the [8] student)."""
    returns: dict[float, list[float]] = {0.0: [], 1.0: []}
    for distill_lambda in (0.0, 1.0):
        for seed in (0, 1, 2):
            student = ProximalPolicyDistillation(
                "MlpPolicy",
                cartpole(seed=seed),
                teacher=teacher,
                distill_lambda=distill_lambda,
                seed=seed,
                **STUDENT_PPO,
            )
            student.learn(10_000)
            returns[distill_lambda].append(cartpole_return(student.policy))
    assert np.median(returns[1.0]) >= 400, returns
    assert np.median(returns[1.0]) > np.median(returns[0.0]) + 200, returns
    assert student.logger.name_to_value["distill/lambda"] == 1.0
    assert np.isfinite(student.logger.name_to_value["distill/loss"])

    # save() leaves the teacher out; after load, set_teacher() before learning again.
    student.save(tmp_path / "ppd.zip")
    loaded = ProximalPolicyDistillation.load(tmp_path / "ppd.zip", env=cartpole())
    obs = np.random.default_rng(0).normal(scale=0.5, size=(64, 4)).astype(np.float32)
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], student.predict(obs, deterministic=True)[0])
    with pytest.raises(RuntimeError, match="no teacher"):
        loaded.learn(256)
    loaded.set_teacher(teacher)
    loaded.learn(256, reset_num_timesteps=False)


def test_q_value_teacher_and_lambda_schedule():
    """A DQN teacher's Q-values, softened by the temperature, guide a PPO student; lambda may decay."""
    dqn = make_teacher("dqn", seed=0, learning_starts=200, train_freq=4, gradient_steps=1)
    dqn.learn(1_000)
    student = ProximalPolicyDistillation(
        "MlpPolicy", cartpole(), teacher=dqn, distill_lambda=lambda progress: progress, seed=0, **STUDENT_PPO
    )
    student.learn(512)
    # Two updates: lambda was 0.5 at the first (progress 1 - 256/512), 0 at the last one.
    assert student.logger.name_to_value["distill/lambda"] == 0.0
    assert np.isfinite(student.logger.name_to_value["distill/loss"])


def test_teachers_without_a_distribution_or_other_spaces_are_refused(teacher):
    with pytest.raises(TypeError, match="SAC and TD3 teachers have none"):
        ProximalPolicyDistillation("MlpPolicy", "Pendulum-v1", teacher=SAC("MlpPolicy", "Pendulum-v1"))
    with pytest.raises(ValueError, match="the teacher acts on"):
        ProximalPolicyDistillation("MlpPolicy", "Acrobot-v1", teacher=teacher)


def test_a_normalised_teacher_needs_a_normalised_student_env():
    run = PUBLISHED / "ppo" / "MountainCar-v0_1"
    with pytest.raises(ValueError, match="VecNormalize"):
        ProximalPolicyDistillation("MlpPolicy", "MountainCar-v0", teacher=run)
    env = load_vec_normalize(run / "MountainCar-v0" / "vecnormalize.pkl", make_vec_env("MountainCar-v0"))
    ProximalPolicyDistillation("MlpPolicy", env, teacher=run)  # with the teacher's statistics: accepted


def test_the_teachers_outputs_are_computed_once_per_rollout(teacher, monkeypatch):
    from sb3_distill.teachers import Teacher

    calls = []
    original = Teacher.targets
    monkeypatch.setattr(Teacher, "targets", lambda self, obs, **k: calls.append(len(obs)) or original(self, obs, **k))
    student = ProximalPolicyDistillation("MlpPolicy", cartpole(), teacher=teacher, seed=0, **STUDENT_PPO)
    student.learn(3 * 8 * STUDENT_PPO["n_steps"])  # 3 rollouts of 8 envs, n_epochs=20 passes each
    assert calls == [8 * STUDENT_PPO["n_steps"]] * 3
    from stable_baselines3.common.buffers import RolloutBuffer

    with pytest.raises(TypeError, match="rollout_buffer_class"):
        ProximalPolicyDistillation("MlpPolicy", cartpole(), teacher=teacher, rollout_buffer_class=RolloutBuffer)
