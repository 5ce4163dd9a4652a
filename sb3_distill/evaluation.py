"""Measuring a student against its teacher: returns, action agreement, compression."""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv

from sb3_distill.outputs import count_acting_parameters
from sb3_distill.serialization import PathLike, atomic_write_bytes

#: torch threads of the latency measurements.
LATENCY_THREADS = 1


def trajectory_agreement(
    teacher: BaseAlgorithm | BasePolicy,
    student: BasePolicy,
    env: VecEnv,
    n_steps: int = 1000,
    actor: str = "teacher",
) -> float:
    """
    Fraction of states where the student's greedy action is the teacher's, along greedy trajectories.

    :param teacher: the teacher
    :param student: the student
    :param env: the environment, wrapped as the teacher was trained
    :param n_steps: number of environment steps (over all of ``env``'s copies)
    :param actor: whose trajectories: ``"teacher"`` (the states it visits) or ``"student"`` (its own,
        mistakes included: what matters when the student is deployed)
    :return: agreement in [0, 1]
    """
    return _along_trajectories(teacher, student, env, n_steps, actor, lambda a, b: float(np.sum(a == b)))


def trajectory_action_error(
    teacher: BaseAlgorithm | BasePolicy,
    student: BasePolicy,
    env: VecEnv,
    n_steps: int = 1000,
    actor: str = "student",
) -> float:
    """
    Continuous actions: mean squared distance between the student's and the teacher's greedy actions
    (in the environment's units), along greedy trajectories.

    :param teacher: the teacher
    :param student: the student
    :param env: the environment, wrapped as the teacher was trained
    :param n_steps: number of environment steps
    :param actor: whose trajectories, ``"teacher"`` or ``"student"``
    :return: mean over states of the summed squared difference
    """
    return _along_trajectories(teacher, student, env, n_steps, actor, lambda a, b: float(np.sum((a - b) ** 2)))


def _along_trajectories(
    teacher: BaseAlgorithm | BasePolicy,
    student: BasePolicy,
    env: VecEnv,
    n_steps: int,
    actor: str,
    score: Callable[[np.ndarray, np.ndarray], float],
) -> float:
    """Average a per-batch ``score`` of (teacher actions, student actions) along the actor's greedy trajectories."""
    if actor not in ("teacher", "student"):
        raise ValueError(f"actor must be 'teacher' or 'student', got {actor!r}")
    obs = env.reset()
    total_score, total = 0.0, 0
    while total < n_steps:
        action, _ = teacher.predict(obs, deterministic=True)  # type: ignore[arg-type]
        student_action, _ = student.predict(obs, deterministic=True)  # type: ignore[arg-type]
        total_score += score(action, student_action)
        total += len(action)
        obs, _, _, _ = env.step(action if actor == "teacher" else student_action)
    return total_score / total


class RandomPolicy:
    """
    Uniformly random actions, with ``predict`` as ``evaluate_policy`` calls it: the floor of a normalised return.

    :param action_space: the environment's action space
    :param seed: seed of the action sampling
    """

    def __init__(self, action_space: spaces.Space, seed: int | None = 0) -> None:
        self.action_space = copy.deepcopy(action_space)
        self.action_space.seed(seed)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """:return: one random action per observation of the batch"""
        n_envs = len(next(iter(observation.values())) if isinstance(observation, dict) else observation)
        return np.array([self.action_space.sample() for _ in range(n_envs)]), None


def normalized_return(value: float, teacher: float, random: float) -> float:
    """
    ``(value - random) / (teacher - random)``: 1 is the teacher's return, 0 a random policy's, whatever the sign.

    :param value: the student's mean return
    :param teacher: the teacher's mean return
    :param random: a random policy's mean return
    :return: the ratio, NaN when the teacher is no better than random
    """
    return (value - random) / (teacher - random) if teacher != random else float("nan")


def compare_returns(
    teacher: BaseAlgorithm | BasePolicy,
    student: BasePolicy,
    env: VecEnv,
    n_eval_episodes: int = 20,
    seed: int | None = 0,
) -> dict[str, Any]:
    """
    Returns of the teacher, the student and a random policy over the same episode seeds.

    :param teacher: the teacher
    :param student: the student
    :param env: the evaluation environment, wrapped as the teacher was trained
    :param n_eval_episodes: episodes per policy
    :param seed: seed of the environment before each policy's evaluation (``None``: not reseeded)
    :return: ``{teacher,student,random}_{mean,std,returns}`` and ``ratio``, the student's random-normalised
        return (:func:`normalized_return`: 1 = the teacher, 0 = random; a raw student / teacher ratio
        misleads when returns are negative)
    """
    results: dict[str, Any] = {}
    policies = (("teacher", teacher), ("student", student), ("random", RandomPolicy(env.action_space, seed)))
    for name, policy in policies:
        if seed is not None:
            env.seed(seed)
        returns, _ = evaluate_policy(policy, env, n_eval_episodes=n_eval_episodes, return_episode_rewards=True)
        assert isinstance(returns, list)
        results[f"{name}_mean"] = float(np.mean(returns))
        results[f"{name}_std"] = float(np.std(returns))
        results[f"{name}_returns"] = [float(r) for r in returns]
    results["ratio"] = normalized_return(results["student_mean"], results["teacher_mean"], results["random_mean"])
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


def inference_latency(policy: BasePolicy, batch_size: int, n_repeats: int = 50) -> float:
    """
    CPU seconds per observation of ``policy.predict`` on a batch (median over repeats), on a CPU copy,
    with :data:`LATENCY_THREADS` torch thread(s).

    :param policy: the policy (teacher's or student's)
    :param batch_size: observations per call (1: acting in one environment)
    :param n_repeats: timed calls
    :return: seconds per observation
    """
    cpu_policy = copy.deepcopy(policy).to("cpu")
    cpu_policy.set_training_mode(False)
    space = cpu_policy.observation_space
    obs = np.stack([space.sample() for _ in range(batch_size)])
    threads = th.get_num_threads()
    th.set_num_threads(LATENCY_THREADS)  # as deployed on a shared machine; more threads only add contention
    try:
        cpu_policy.predict(obs, deterministic=True)  # warm-up
        times = []
        for _ in range(n_repeats):
            start = time.perf_counter()
            cpu_policy.predict(obs, deterministic=True)
            times.append(time.perf_counter() - start)
    finally:
        th.set_num_threads(threads)
    return float(np.median(times)) / batch_size


def compare(
    teacher: BaseAlgorithm,
    student: BasePolicy,
    env: VecEnv,
    n_eval_episodes: int = 30,
    seed: int = 0,
    agreement_steps: int = 1000,
    latency_batches: tuple[int, ...] = (1, 256),
) -> dict[str, Any]:
    """
    Everything that says how a student does against its teacher.

    :param teacher: the teacher model
    :param student: the student
    :param env: the environment, wrapped as the teacher was trained
    :param n_eval_episodes: episodes per policy, over the same seeds
    :param seed: seed of the environment before each evaluation
    :param agreement_steps: steps of the student's own greedy trajectories on which agreement is measured
    :param latency_batches: batch sizes of the CPU latency measurements
    :return: returns (mean, std, ratio), ``agreement_on_student_trajectories`` (continuous actions:
        ``action_error_on_student_trajectories``, see :func:`trajectory_action_error`), parameter counts,
        ``compression`` and ``latency_s`` per batch size for both
    """
    results = compare_returns(teacher, student, env, n_eval_episodes=n_eval_episodes, seed=seed)
    env.seed(seed)
    if isinstance(env.action_space, spaces.Box):
        results["action_error_on_student_trajectories"] = trajectory_action_error(
            teacher, student, env, n_steps=agreement_steps, actor="student"
        )
    else:
        results["agreement_on_student_trajectories"] = trajectory_agreement(
            teacher, student, env, n_steps=agreement_steps, actor="student"
        )
    results["teacher_parameters"] = count_acting_parameters(teacher.policy)
    results["student_parameters"] = count_acting_parameters(student)
    results["compression"] = results["student_parameters"] / results["teacher_parameters"]
    results["latency_threads"] = LATENCY_THREADS
    results["latency_s"] = {
        name: {str(batch): inference_latency(policy, batch) for batch in latency_batches}
        for name, policy in (("teacher", teacher.policy), ("student", student))
    }
    return results


def format_comparison(results: dict[str, Any]) -> str:
    """:return: :func:`compare`'s results as a text table."""
    latency = results["latency_s"]
    rows = [
        ("return (mean ± std)", "{teacher_mean:.2f} ± {teacher_std:.2f}", "{student_mean:.2f} ± {student_std:.2f}"),
        ("acting parameters", "{teacher_parameters:,}", "{student_parameters:,}"),
    ]
    lines = [f"{'':34}{'teacher':>22}{'student':>22}"]
    lines += [f"{label:34}{left.format(**results):>22}{right.format(**results):>22}" for label, left, right in rows]
    for batch in latency["teacher"]:
        teacher_us, student_us = latency["teacher"][batch] * 1e6, latency["student"][batch] * 1e6
        lines.append(f"{'CPU latency per obs, batch ' + batch:34}{teacher_us:>19.1f} µs{student_us:>19.1f} µs")
    lines.append(f"(latency: median of 50 predict calls, {results['latency_threads']} torch thread)")
    lines.append(f"{'random policy return':34}{results['random_mean']:>44.2f}")
    lines.append(f"{'normalised return (1 = teacher, 0 = random)':44}{results['ratio']:>34.3f}")
    if "agreement_on_student_trajectories" in results:
        lines.append(f"{'agreement (student trajectories)':34}{results['agreement_on_student_trajectories']:>44.3f}")
    else:
        lines.append(
            f"{'action error (student trajectories)':34}{results['action_error_on_student_trajectories']:>44.4f}"
        )
    lines.append(f"{'compression':34}{results['compression']:>44.2%}")
    lines.append(f"({results['n_eval_episodes']} episodes each, same seeds)")
    return "\n".join(lines)


def plot_comparison(results: dict[str, Any], path: PathLike) -> None:
    """
    Save a PNG of the teacher's and the student's return distributions (needs matplotlib), atomically.

    :param results: :func:`compare`'s results
    :param path: the PNG file
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
    figure, axis = plt.subplots(figsize=(6, 4))
    data = [results["teacher_returns"], results["student_returns"]]
    axis.boxplot(data, showmeans=True)
    axis.set_xticks([1, 2], ["teacher", f"student ({results['compression']:.2%} of the parameters)"])
    for position, returns in enumerate(data, start=1):
        jitter = np.random.default_rng(position).uniform(-0.08, 0.08, len(returns))
        axis.scatter(position + jitter, returns, s=8, alpha=0.5)
    axis.set_ylabel(f"episode return ({results['n_eval_episodes']} episodes, same seeds)")
    axis.set_title(f"normalised return (1 = teacher, 0 = random): {results['ratio']:.3f}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(buffer.getvalue(), path)
