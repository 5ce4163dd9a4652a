"""Measuring a student against its teacher: returns, action agreement, compression."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv

from sb3_distill.outputs import count_acting_parameters


def trajectory_agreement(
    teacher: BaseAlgorithm | BasePolicy, student: BasePolicy, env: VecEnv, n_steps: int = 1000
) -> float:
    """
    Fraction of states where the student's greedy action is the teacher's, on the teacher's own greedy trajectories.

    :param teacher: the teacher (it acts)
    :param student: the student (only asked)
    :param env: the environment, wrapped as the teacher was trained
    :param n_steps: number of environment steps (over all of ``env``'s copies)
    :return: agreement in [0, 1]
    """
    obs = env.reset()
    agree = total = 0
    while total < n_steps:
        action, _ = teacher.predict(obs, deterministic=True)  # type: ignore[arg-type]
        student_action, _ = student.predict(obs, deterministic=True)  # type: ignore[arg-type]
        agree += int(np.sum(action == student_action))
        total += len(action)
        obs, _, _, _ = env.step(action)
    return agree / total


def compare_returns(
    teacher: BaseAlgorithm | BasePolicy,
    student: BasePolicy,
    env: VecEnv,
    n_eval_episodes: int = 20,
    seed: int | None = 0,
) -> dict[str, Any]:
    """
    Mean and standard deviation of the teacher's and the student's returns over the same episode seeds.

    :param teacher: the teacher
    :param student: the student
    :param env: the evaluation environment, wrapped as the teacher was trained
    :param n_eval_episodes: episodes per policy
    :param seed: seed of the environment before each policy's evaluation (``None``: not reseeded)
    :return: ``teacher_mean``, ``teacher_std``, ``student_mean``, ``student_std``, ``ratio`` (student / teacher)
    """
    results: dict[str, Any] = {}
    for name, policy in (("teacher", teacher), ("student", student)):
        if seed is not None:
            env.seed(seed)
        returns, _ = evaluate_policy(policy, env, n_eval_episodes=n_eval_episodes, return_episode_rewards=True)
        results[f"{name}_mean"] = float(np.mean(returns))
        results[f"{name}_std"] = float(np.std(returns))
    teacher_mean = results["teacher_mean"]
    results["ratio"] = results["student_mean"] / teacher_mean if teacher_mean != 0 else float("nan")
    results["n_eval_episodes"] = n_eval_episodes
    return results


def compression_ratio(teacher: BaseAlgorithm | BasePolicy, student: BasePolicy) -> float:
    """
    :param teacher: an SB3 model or policy
    :param student: the student
    :return: student acting parameters / teacher acting parameters
    """
    teacher_policy = teacher.policy if isinstance(teacher, BaseAlgorithm) else teacher
    return count_acting_parameters(student) / count_acting_parameters(teacher_policy)
