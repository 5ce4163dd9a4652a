"""Proximal Policy Distillation: PPO on the student's own rollouts plus the clipped distillation term."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import ProximalPolicyDistillation
from tests.conftest import CARTPOLE, make_teacher

# The teachers' CartPole PPO settings, with an [8] student.
STUDENT_PPO = {**CARTPOLE["ppo"][2], "policy_kwargs": {"net_arch": [8]}}


@pytest.fixture(scope="module")
def teacher():
    model = make_teacher("ppo", seed=0)
    model.learn(30_000)  # return 500 over 10 episodes (measured)
    return model


def cartpole(n_envs: int = 8):
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)


def mean_return(policy) -> float:
    return float(evaluate_policy(policy, make_vec_env("CartPole-v1", seed=5), n_eval_episodes=10)[0])


def test_distillation_term_makes_a_small_student_learn_fast(teacher, tmp_path):
    """Measured (seed 0, 10k steps): PPD 500 with lambda=1, 18.5 with lambda=0 (plain PPO on the [8] student)."""
    returns = {}
    for distill_lambda in (0.0, 1.0):
        student = ProximalPolicyDistillation(
            "MlpPolicy", cartpole(), teacher=teacher, distill_lambda=distill_lambda, seed=0, **STUDENT_PPO
        )
        student.learn(10_000)
        returns[distill_lambda] = mean_return(student.policy)
    assert returns[1.0] >= 400
    assert returns[1.0] > returns[0.0] + 200
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
