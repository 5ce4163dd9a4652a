"""Offline policy distillation from a trained agent: teacher-, student-driven and mixed collection.

The loop, top to bottom:

1. someone acts in the environment: the teacher (Rusu et al., "Policy Distillation", 2015), the student
   (DAgger-style student-driven collection, as compared by Green et al., 2019 and Spigler, 2024: the
   student visits its own mistakes and the teacher says what it should have done), or a mix that moves
   from the first to the second;
2. the teacher labels every visited observation (its action scores, and its values for actor-critics),
   once, without gradients;
3. (observation, teacher outputs) go to a bounded memory, observations in their own dtype (uint8 frames
   stay uint8);
4. every ``train_freq`` transitions, the :class:`~sb3_distill.distiller.Distiller` (the same update step as
   the real-time callback) trains the students on ``epochs`` samples per new transition drawn from the memory.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import HumanOutputFormat, Logger
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

from sb3_distill.distiller import DistillConfig, Distiller, check_positive
from sb3_distill.normalization import obs_normalization_of
from sb3_distill.outputs import GAUSSIAN, PolicyOutputs
from sb3_distill.students import (
    SINGLE_STUDENT,
    StudentMixin,
    StudentSpec,
    make_students,
    student_specs,
)
from sb3_distill.teachers import Teacher, eval_mode, open_teacher, teacher_env

#: Who acts while observations are collected.
COLLECT_MODES = ("teacher", "student", "mixed")


class TargetMemory:
    """
    A bounded first-in-first-out memory of observations and the teacher's outputs for them.

    :param size: how many observations it holds
    :param observation_space: the teacher's observation space (its dtype is kept: uint8 frames stay uint8)
    :param n_actions: number of action scores per observation (the action dimension for continuous actions)
    :param with_values: also keep the teacher's state values
    :param with_log_std: also keep the log std of a Gaussian teacher
    """

    def __init__(
        self, size: int, observation_space: spaces.Box, n_actions: int, with_values: bool, with_log_std: bool = False
    ) -> None:
        self.size = size
        self.obs = np.zeros((size, *observation_space.shape), dtype=observation_space.dtype)
        self.scores = np.zeros((size, n_actions), dtype=np.float32)
        self.values = np.zeros(size, dtype=np.float32) if with_values else None
        self.log_std = np.zeros((size, n_actions), dtype=np.float32) if with_log_std else None
        self.pos = 0
        self.full = False

    def __len__(self) -> int:
        return self.size if self.full else self.pos

    def add(self, obs: np.ndarray, targets: PolicyOutputs) -> None:
        """Store a batch of observations with the teacher's outputs for them."""
        rows = (self.pos + np.arange(len(obs))) % self.size
        self.obs[rows] = obs
        self.scores[rows] = targets.scores.cpu().numpy()
        if self.values is not None and targets.values is not None:
            self.values[rows] = targets.values.cpu().numpy()
        if self.log_std is not None and targets.log_std is not None:
            self.log_std[rows] = targets.log_std.cpu().numpy()
        self.full = self.full or self.pos + len(obs) >= self.size
        self.pos = int((self.pos + len(obs)) % self.size)

    def sample(self, n: int, rng: np.random.Generator, device: th.device) -> tuple[th.Tensor, PolicyOutputs]:
        """:return: ``n`` observations drawn uniformly (with replacement), with their targets, on ``device``."""
        rows = rng.integers(0, len(self), size=n)
        values = None if self.values is None else th.as_tensor(self.values[rows], device=device)
        log_std = None if self.log_std is None else th.as_tensor(self.log_std[rows], device=device)
        targets = PolicyOutputs(th.as_tensor(self.scores[rows], device=device), values, log_std)
        return th.as_tensor(self.obs[rows], device=device), targets


def _check_options(collect: str, n_steps: int, exploration_rate: float, mixed_fraction: float) -> None:
    if collect not in COLLECT_MODES:
        raise ValueError(f"unknown collect mode {collect!r}: expected one of {', '.join(COLLECT_MODES)}")
    check_positive("n_steps", n_steps, integer=True)
    check_positive("exploration_rate", exploration_rate, allow_zero=True)
    if exploration_rate > 1:
        raise ValueError(f"exploration_rate is a probability, got {exploration_rate!r}")
    check_positive("mixed_fraction", mixed_fraction)
    if mixed_fraction > 1:
        raise ValueError(f"mixed_fraction is a fraction of n_steps, got {mixed_fraction!r}")


def teacher_share(collect: str, step: int, n_steps: int, mixed_fraction: float) -> float:
    """
    The probability that the teacher acts at ``step`` (per environment and step, like DAgger's beta).

    ``"mixed"`` moves linearly from teacher-driven (1) to student-driven (0) over the first
    ``mixed_fraction`` of the steps, then stays student-driven.

    :return: beta in [0, 1]
    """
    if collect == "teacher":
        return 1.0
    if collect == "student":
        return 0.0
    return max(0.0, 1.0 - step / (mixed_fraction * n_steps))


def distill(
    teacher: BaseAlgorithm | str | os.PathLike[str],
    student: StudentSpec | Mapping[str, Any],
    env: VecEnv | gym.Env | str | None,
    n_steps: int,
    collect: str = "teacher",
    student_kwargs: dict[str, Any] | None = None,
    loss: str | None = None,
    temperature: float | None = None,
    learning_rate: float | Schedule = 1e-3,
    batch_size: int = 128,
    epochs: int = 4,
    buffer_size: int = 100_000,
    train_freq: int | None = None,
    exploration_rate: float = 0.0,
    mixed_fraction: float = 0.5,
    distill_value: bool | None = None,
    vf_coef: float = 0.5,
    max_grad_norm: float | None = None,
    seed: int | None = None,
    device: th.device | str = "auto",
    logger: Logger | None = None,
    log_interval: int = 10,
    callback: Callable[[int, dict[str, BasePolicy]], bool | None] | None = None,
    verbose: int = 0,
) -> BasePolicy | dict[str, BasePolicy]:
    """
    Distil a trained agent into small students, offline.

    :param teacher: a PPO, A2C, TRPO, DQN, QR-DQN, SAC or TD3 model, the path of its zip, or an RL-Zoo run
        folder (``logs/ppo/Acrobot-v1_1``); it is never changed
    :param student: as for :class:`~sb3_distill.RealTimeDistillCallback`: an alias of the teacher's
        policy family, a policy class (or its dotted name: an actor-critic student of a DQN teacher is
        ``"stable_baselines3.common.policies.ActorCriticPolicy"``), an instance, a ``torch.nn.Module``,
        or a dict name -> spec
    :param env: the environment as the teacher was trained on it (wrappers, frame stack), or a gym id.
        A teacher trained under ``VecNormalize`` gets its statistics, frozen, when the environment has none:
        those saved beside its zip (RL-Zoo's ``vecnormalize.pkl``) or held by a model in memory; missing
        statistics are an error. ``None``: the environment of a teacher saved in an RL-Zoo run folder,
        built as ``rl_zoo3.enjoy`` builds it
    :param n_steps: environment steps to collect (summed over the vectorised environments)
    :param collect: who acts: ``"teacher"``, ``"student"`` (with several students, environment ``i`` is
        driven by student ``i % n_students``) or ``"mixed"`` (see :func:`teacher_share`)
    :param student_kwargs: ``policy_kwargs`` of a single student
    :param loss: ``"kl"``, ``"mse"`` or ``"nll"`` (``None``: ``"kl"``; ``"mse"`` for SAC and TD3 teachers)
    :param temperature: KL temperature (``None``: 0.01 for Q-value teachers, 1.0 for actor-critics)
    :param learning_rate: the students' learning rate, a float or a schedule of the remaining progress
    :param batch_size: minibatch size
    :param epochs: samples drawn from the memory per new transition
    :param buffer_size: how many (observation, teacher outputs) the memory holds
    :param train_freq: transitions between two updates (``None``: ``batch_size``)
    :param exploration_rate: probability of a uniformly random action, whoever acts (epsilon-greedy;
        continuous actions are drawn uniformly within the action space's bounds)
    :param mixed_fraction: with ``collect="mixed"``, the share of ``n_steps`` over which the teacher hands over
    :param distill_value: also distil the teacher's values (``None``: when teacher and student are actor-critics)
    :param vf_coef: weight of the value loss
    :param max_grad_norm: clip the students' gradient norm
    :param seed: seeds the students, the memory sampling, exploration and the environment
    :param device: where the students (and a teacher loaded from a path) live
    :param logger: an SB3 logger for ``distill/...``, ``rollout/...`` and ``collect/...`` metrics
        (default: stdout when ``verbose >= 1``)
    :param log_interval: updates between two logger dumps
    :param callback: called after every update with (steps so far, the students); returning ``False``
        stops the distillation early (to evaluate students along the way, say)
    :param verbose: 1 prints the metrics
    :return: the student, or the dict name -> student
    """
    _check_options(collect, n_steps, exploration_rate, mixed_fraction)
    model, agent = open_teacher(teacher, device=device)
    config = DistillConfig(loss, temperature, learning_rate, batch_size, epochs, distill_value, vf_coef, max_grad_norm)
    train_freq = batch_size if train_freq is None else train_freq
    check_positive("buffer_size", buffer_size, integer=True)
    check_positive("train_freq", train_freq, integer=True)
    specs = student_specs(student, student_kwargs)
    teacher_view = Teacher(model)
    students_seed, distiller_seed, collect_seed, env_seed = np.random.SeedSequence(seed).generate_state(4)
    venv = teacher_env(model, agent, env, seed=None if seed is None else int(env_seed))
    students = make_students(
        specs,
        teacher_view.observation_space,
        teacher_view.action_space,
        model.policy_aliases,
        learning_rate=config.learning_rate_at(1.0),
        seed=int(students_seed),
        device=teacher_view.device,
        teacher_policy=model.policy,
    )
    distiller = Distiller(teacher_view, students, config, seed=int(distiller_seed))
    with_values = any(distiller.distill_value.values())
    action_space = teacher_view.action_space
    discrete = isinstance(action_space, spaces.Discrete)
    n_scores = int(action_space.n) if isinstance(action_space, spaces.Discrete) else int(action_space.shape[0])
    with_log_std = teacher_view.kind == GAUSSIAN
    memory = TargetMemory(buffer_size, teacher_view.observation_space, n_scores, with_values, with_log_std)
    rng = np.random.default_rng(int(collect_seed))
    if logger is None:
        logger = Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if verbose >= 1 else [])
    normalization = obs_normalization_of(unwrap_vec_normalize(venv))
    for policy in students.values():
        if isinstance(policy, StudentMixin):
            policy.obs_normalization = normalization

    drivers = list(students.values())
    n_envs = venv.num_envs
    episode_returns: deque[float] = deque(maxlen=100)
    if seed is not None:
        venv.seed(int(env_seed))
    obs = venv.reset()
    assert isinstance(obs, np.ndarray), "Box observations only"
    step = new_transitions = n_updates = teacher_actions = 0
    while step < n_steps:
        # 1-2. The teacher labels the observations; whoever is chosen acts greedily (epsilon-greedy).
        obs_tensor = th.as_tensor(obs, device=teacher_view.device)
        targets = teacher_view.targets(obs_tensor, with_values=with_values)
        beta = teacher_share(collect, step, n_steps, mixed_fraction)
        by_student = rng.random(n_envs) >= beta
        with distiller.private_torch_rng(), eval_mode(model.policy):  # predict() would leave it in eval mode
            actions = (
                targets.scores.argmax(dim=-1).cpu().numpy() if discrete else model.predict(obs, deterministic=True)[0]
            )
            for index, driver in enumerate(drivers):
                driven = np.flatnonzero(by_student & (np.arange(n_envs) % len(drivers) == index))
                if len(driven):
                    actions[driven] = driver.predict(obs[driven], deterministic=True)[0]
        explore = rng.random(n_envs) < exploration_rate
        if isinstance(action_space, spaces.Discrete):
            actions[explore] = rng.integers(0, action_space.n, size=int(explore.sum()))
        else:
            low, high = venv.action_space.low, venv.action_space.high  # type: ignore[attr-defined]
            actions[explore] = rng.uniform(low, high, size=(int(explore.sum()), *low.shape))
        teacher_actions += int((~by_student).sum())
        # 3. The memory keeps the observation the teacher labelled, as the environment gave it.
        memory.add(obs, targets)
        obs, _, _, infos = venv.step(actions)
        assert isinstance(obs, np.ndarray)
        episode_returns.extend(float(info["episode"]["r"]) for info in infos if "episode" in info)
        step += n_envs
        new_transitions += n_envs
        # 4. Train on epochs samples per new transition, once enough are new.
        if new_transitions >= train_freq and len(memory) >= batch_size:
            batch_obs, batch_targets = memory.sample(epochs * new_transitions, distiller.rng, teacher_view.device)
            metrics = distiller.update(batch_obs, 1.0 - step / n_steps, epochs=1, targets=batch_targets)
            new_transitions = 0
            n_updates += 1
            distiller.record(logger, metrics, n_updates)
            if n_updates % log_interval == 0:
                _record_collection(logger, step, beta, teacher_actions / step, len(memory), episode_returns)
                logger.dump(step)
            if callback is not None and callback(step, students) is False:
                break
    beta = teacher_share(collect, step, n_steps, mixed_fraction)
    _record_collection(logger, step, beta, teacher_actions / step, len(memory), episode_returns)
    logger.dump(step)
    return students[SINGLE_STUDENT] if list(students) == [SINGLE_STUDENT] else students


def _record_collection(
    logger: Logger, step: int, beta: float, teacher_fraction: float, memory_size: int, returns: deque[float]
) -> None:
    logger.record("collect/steps", step)
    logger.record("collect/beta", beta)
    logger.record("collect/teacher_fraction", teacher_fraction)
    logger.record("collect/memory_size", memory_size)
    if returns:
        logger.record("rollout/ep_rew_mean", float(np.mean(returns)))
