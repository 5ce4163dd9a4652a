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

:class:`EnvironmentCollector` does steps 1-3; :class:`OfflineDistillation` is the loop, SB3-style
(``learn(n_steps, callback)``, SB3 callbacks and logger); :func:`distill` is the one-call form.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import configure_logger
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from sb3_distill.callbacks import DistillationRun, DistillCallback
from sb3_distill.distiller import DistillConfig, Distiller, check_positive
from sb3_distill.normalization import obs_normalization_of
from sb3_distill.outputs import GAUSSIAN, LOGITS, SQUASHED_GAUSSIAN
from sb3_distill.sources import TargetMemory
from sb3_distill.students import StudentSpec, student_specs
from sb3_distill.teachers import eval_mode, open_teacher, teacher_env

#: Who acts while observations are collected.
COLLECT_MODES = ("teacher", "student", "mixed")

#: Samples drawn from the memory per new transition, by collection mode, when ``epochs`` is not given.
#: Where the student acts, the states it visits move as it learns, and 8 passes beat 4 against DAgger
#: (``benchmarks/vs_imitation.py``, 10 seeds: DQN CartPole median 500 against 244, MountainCar -122
#: against -140, PPO CartPole 500 at both); teacher-driven data stays at 4, BC's equal.
DEFAULT_EPOCHS = {"teacher": 4, "student": 8, "mixed": 8}

#: Observations the memory holds when ``buffer_size`` is not given (100k MinAtar frames: 60 MB; Atari: 2.8 GB).
DEFAULT_BUFFER_SIZE = 100_000


class EnvironmentCollector:
    """
    The offline observation source: someone acts in the environment, the teacher labels every visited observation.

    :param venv: the environment, as the teacher's policy sees it
    :param model: the teacher (acts, and labels through ``distiller.teacher``)
    :param distiller: the distiller, whose students may act and whose private torch generator acting uses
    :param memory: where labelled observations go
    :param collect: ``"teacher"``, ``"student"`` or ``"mixed"``
    :param exploration_rate: probability of a uniformly random action
    :param mixed_fraction: with ``"mixed"``, the share of the run over which the teacher hands over
    :param rng: the collector's own generator (who acts, exploration)
    :param deterministic_teacher: the teacher acts greedily; ``False``: it samples from its policy
    :param deterministic_student: the students act greedily; ``False``: they sample from their policy
    """

    def __init__(
        self,
        venv: VecEnv,
        model: BaseAlgorithm,
        distiller: Distiller,
        memory: TargetMemory,
        collect: str,
        exploration_rate: float,
        mixed_fraction: float,
        rng: np.random.Generator,
        deterministic_teacher: bool = False,
        deterministic_student: bool = True,
    ) -> None:
        self.venv = venv
        self.model = model
        self.distiller = distiller
        self.memory = memory
        self.collect = collect
        self.exploration_rate = exploration_rate
        self.mixed_fraction = mixed_fraction
        self.rng = rng
        self.deterministic_teacher = deterministic_teacher
        self.deterministic_student = deterministic_student
        self.with_values = any(distiller.distill_value.values())
        self.drivers = list(distiller.students.values())
        self.steps = self.n_new = self.teacher_actions = 0
        self.n_steps = 1
        self.beta = 1.0
        self.episode_returns: deque[float] = deque(maxlen=100)
        self._obs: np.ndarray | None = None

    def reset(self, n_steps: int, seed: int | None) -> None:
        """Start a run of ``n_steps`` environment steps (the mixed schedule is a share of it)."""
        self.n_steps = n_steps
        self.steps = self.n_new = self.teacher_actions = 0
        if seed is not None:
            self.venv.seed(seed)
        obs = self.venv.reset()
        assert isinstance(obs, np.ndarray), "Box observations only"
        self._obs = obs

    def _actions(self, obs: np.ndarray, scores: th.Tensor, by_student: np.ndarray) -> np.ndarray:
        """
        The teacher's actions (unless ``deterministic_teacher``, as it acts when it trains: sampled from its
        policy, epsilon-greedy for a Q-value teacher), the students' greedy ones where they act, then the
        ``exploration_rate``'s uniformly random actions.
        """
        teacher = self.distiller.teacher
        action_space = teacher.action_space
        n_envs = len(obs)
        sample = not self.deterministic_teacher
        with self.distiller.private_torch_rng(), eval_mode(self.model.policy):  # predict() would leave eval mode
            if isinstance(action_space, spaces.Discrete) and sample and teacher.kind == LOGITS:
                actions = th.multinomial(th.softmax(scores, dim=-1), 1).squeeze(-1).cpu().numpy()
            elif isinstance(action_space, spaces.Discrete):
                actions = scores.argmax(dim=-1).cpu().numpy()
                if sample:  # a Q-value teacher's own epsilon-greedy, as at the end of its training
                    epsilon = float(getattr(self.model, "exploration_final_eps", 0.0))
                    rows = self.rng.random(n_envs) < epsilon
                    actions[rows] = self.rng.integers(0, action_space.n, size=int(rows.sum()))
            else:  # sampled under the distiller's private torch generator
                actions = self.model.predict(obs, deterministic=not sample)[0]
            for index, driver in enumerate(self.drivers):
                driven = np.flatnonzero(by_student & (np.arange(n_envs) % len(self.drivers) == index))
                if len(driven):
                    actions[driven] = driver.predict(obs[driven], deterministic=self.deterministic_student)[0]
        explore = self.rng.random(n_envs) < self.exploration_rate
        if isinstance(action_space, spaces.Discrete):
            actions[explore] = self.rng.integers(0, action_space.n, size=int(explore.sum()))
        else:
            low, high = self.venv.action_space.low, self.venv.action_space.high  # type: ignore[attr-defined]
            actions[explore] = self.rng.uniform(low, high, size=(int(explore.sum()), *low.shape))
        return actions

    def collect_step(self) -> None:
        """One step of every environment: the teacher labels, someone acts, the memory keeps what was labelled."""
        obs = self._obs
        assert obs is not None, "call reset() first"
        teacher = self.distiller.teacher
        targets = teacher.targets(th.as_tensor(obs, device=teacher.device), with_values=self.with_values)
        self.beta = teacher_share(self.collect, self.steps, self.n_steps, self.mixed_fraction)
        by_student = self.rng.random(len(obs)) >= self.beta
        actions = self._actions(obs, targets.scores, by_student)
        self.teacher_actions += int((~by_student).sum())
        self.memory.add(obs, targets)  # the observation the teacher labelled, as the environment gave it
        next_obs, _, _, infos = self.venv.step(actions)
        assert isinstance(next_obs, np.ndarray)
        self._obs = next_obs
        self.episode_returns.extend(float(info["episode"]["r"]) for info in infos if "episode" in info)
        self.steps += len(obs)
        self.n_new += len(obs)

    def take(self, epochs: int, rng: np.random.Generator) -> tuple[th.Tensor, Any]:
        """:return: ``epochs`` labelled observations per new transition, drawn from the memory, with their targets"""
        batch = self.memory.sample(epochs * self.n_new, rng, self.distiller.teacher.device)
        self.n_new = 0
        return batch

    def record(self, logger: Logger) -> None:
        """Log the collection: steps, beta, the teacher's share of actions, the memory, returns."""
        logger.record("collect/steps", self.steps)
        logger.record("collect/beta", self.beta)
        logger.record("collect/teacher_fraction", self.teacher_actions / max(self.steps, 1))
        logger.record("collect/memory_size", len(self.memory))
        if self.episode_returns:
            logger.record("rollout/ep_rew_mean", float(np.mean(self.episode_returns)))


def _check_options(collect: str, exploration_rate: float, mixed_fraction: float) -> None:
    if collect not in COLLECT_MODES:
        raise ValueError(f"unknown collect mode {collect!r}: expected one of {', '.join(COLLECT_MODES)}")
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


class OfflineDistillation(DistillationRun):
    """
    Distil a trained agent into small students, offline, as an SB3-style object: set up, then ``learn``.

    SB3 callbacks see it as they see a model: ``num_timesteps``, ``logger``, ``get_env()`` and ``predict``
    (the student's, with a single student), so ``EvalCallback`` evaluates the student as it learns.
    ``on_step`` is called after every vectorised environment step, ``on_rollout_end`` after every update.

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
    :param collect: who acts: ``"teacher"``, ``"student"`` (with several students, environment ``i`` is
        driven by student ``i % n_students``) or ``"mixed"`` (see :func:`teacher_share`)
    :param student_kwargs: ``policy_kwargs`` of a single student
    :param student_algo: the algorithm whose policy aliases ``student`` names (``"ppo"``: ``"MlpPolicy"`` is an
        actor-critic, ready for :func:`~sb3_distill.to_ppo`, even from a DQN teacher); ``None``: the teacher's
    :param loss: ``"kl"``, ``"mse"`` or ``"nll"`` (``None``: ``"kl"``; ``"mse"`` for SAC and TD3 teachers)
    :param temperature: KL temperature (``None``: 0.01 for Q-value teachers, 1.0 for actor-critics)
    :param learning_rate: the students' learning rate, a float or a schedule of the remaining progress
    :param batch_size: minibatch size
    :param epochs: samples drawn from the memory per new transition (``None``: 4 when the teacher drives,
        8 when the student acts: ``DEFAULT_EPOCHS``)
    :param buffer_size: how many (observation, teacher outputs) the memory holds
    :param train_freq: transitions between two updates (``None``: ``batch_size``)
    :param exploration_rate: probability of a uniformly random action, whoever acts (epsilon-greedy;
        continuous actions are drawn uniformly within the action space's bounds)
    :param deterministic_teacher: where the teacher acts, it takes its greedy action. ``False`` (default): it
        acts as when it trained, which shows the students more varied states than its greedy path
        (``benchmarks/vs_imitation.py``): actor-critics sample from their policy, Q-value teachers are
        epsilon-greedy with their own ``exploration_final_eps``, TD3 stays deterministic
    :param deterministic_student: where a student acts, it takes its greedy action; ``False``: it samples from its
        policy, as ``imitation``'s DAgger learner does. ``None`` (default): it acts as its teacher does when it
        trains, sampling for actor-critic and SAC teachers, greedily for Q-value and TD3 teachers
        (``benchmarks/vs_imitation.py``: sampling students of the published PPO MountainCar agent return -114.6
        against -122.4 greedy, median of 10 seeds; of the DQN CartPole agent, 160 against 500)
    :param mixed_fraction: with ``collect="mixed"``, the share of ``n_steps`` over which the teacher hands over
    :param distill_value: also distil the teacher's state values (an actor-critic's value, or a DQN or QR-DQN
        teacher's ``max_a Q``) into the student's value head (``None``: when both are actor-critics, and for a
        Q-value teacher's actor-critic student with a CNN, which then gets a critic CNN of its own:
        :class:`~sb3_distill.distiller.DistillConfig`)
    :param vf_coef: weight of the value loss
    :param max_grad_norm: clip the students' gradient norm
    :param seed: seeds the students, the memory sampling, exploration and the environment
    :param device: where the students (and a teacher loaded from a path) live
    :param logger: an SB3 logger for ``distill/...``, ``rollout/...`` and ``collect/...`` metrics
        (default: stdout when ``verbose >= 1``)
    :param tensorboard_log: a folder for TensorBoard logs (SB3's ``configure_logger``), when no ``logger`` is given
    :param verbose: 1 prints the metrics
    """

    def __init__(
        self,
        teacher: BaseAlgorithm | str | os.PathLike[str],
        student: StudentSpec | Mapping[str, Any],
        env: VecEnv | gym.Env | str | None,
        collect: str = "teacher",
        student_kwargs: dict[str, Any] | None = None,
        student_algo: str | type[BaseAlgorithm] | None = None,
        loss: str | None = None,
        temperature: float | None = None,
        learning_rate: float | Schedule = 1e-3,
        batch_size: int = 128,
        epochs: int | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        train_freq: int | None = None,
        exploration_rate: float = 0.0,
        deterministic_teacher: bool = False,
        deterministic_student: bool | None = None,
        mixed_fraction: float = 0.5,
        distill_value: bool | None = None,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = None,
        seed: int | None = None,
        device: th.device | str = "auto",
        logger: Logger | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
    ) -> None:
        _check_options(collect, exploration_rate, mixed_fraction)
        specs = student_specs(student, student_kwargs, student_algo)
        self.config = DistillConfig(
            loss=loss,
            temperature=temperature,
            learning_rate=learning_rate,
            batch_size=batch_size,
            epochs=DEFAULT_EPOCHS[collect] if epochs is None else epochs,
            distill_value=distill_value,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
        )
        self.train_freq = batch_size if train_freq is None else train_freq
        check_positive("buffer_size", buffer_size, integer=True)
        check_positive("train_freq", self.train_freq, integer=True)
        self.seed = seed
        self.verbose = verbose
        self.num_timesteps = 0
        self.n_updates = 0
        #: the metrics of the last update (what :meth:`Distiller.update` returned), ``None`` before the first
        self.last_metrics: dict[str, Any] | None = None
        if not isinstance(deterministic_teacher, bool):
            raise TypeError(f"deterministic_teacher must be True or False, got {deterministic_teacher!r}")
        if deterministic_student is not None and not isinstance(deterministic_student, bool):
            raise TypeError(f"deterministic_student must be True, False or None, got {deterministic_student!r}")
        self.deterministic_teacher = deterministic_teacher
        self.deterministic_student = deterministic_student
        self._setup(teacher, specs, env, collect, buffer_size, exploration_rate, mixed_fraction, device)
        self.logger = logger or configure_logger(verbose, tensorboard_log, "OfflineDistillation")

    def _setup(
        self,
        teacher: BaseAlgorithm | str | os.PathLike[str],
        specs: dict[str, tuple[StudentSpec, dict[str, Any] | None]],
        env: VecEnv | gym.Env | str | None,
        collect: str,
        buffer_size: int,
        exploration_rate: float,
        mixed_fraction: float,
        device: th.device | str,
    ) -> None:
        """Teacher, environment, students, distiller, memory and collector: everything checked before a step."""
        self.model, agent = open_teacher(teacher, device=device)
        students_seed, distiller_seed, collect_seed, env_seed = np.random.SeedSequence(self.seed).generate_state(4)
        self._env_seed = None if self.seed is None else int(env_seed)
        self.env = teacher_env(self.model, agent, env, seed=self._env_seed)
        self.distiller = Distiller.for_teacher(
            self.model,
            specs,
            self.config,
            int(students_seed),
            int(distiller_seed),
            normalization=obs_normalization_of(unwrap_vec_normalize(self.env)),
        )
        view = self.distiller.teacher
        if self.deterministic_student is None:  # as the teacher acts when it trains
            self.deterministic_student = view.kind not in (LOGITS, GAUSSIAN, SQUASHED_GAUSSIAN)
        memory = self.distiller.target_memory(buffer_size)
        self.collector = EnvironmentCollector(
            self.env,
            self.model,
            self.distiller,
            memory,
            collect,
            exploration_rate,
            mixed_fraction,
            np.random.default_rng(int(collect_seed)),
            self.deterministic_teacher,
            self.deterministic_student,
        )

    def get_env(self) -> VecEnv:
        """:return: the environment observations are collected in (for SB3 callbacks)"""
        return self.env

    def get_vec_normalize_env(self) -> VecNormalize | None:
        """:return: the teacher's ``VecNormalize`` statistics the environment applies, if any (for SB3 callbacks)"""
        return unwrap_vec_normalize(self.env)

    def predict(
        self, observation: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """The single student's ``predict`` (for ``evaluate_policy`` and ``EvalCallback``)."""
        result = self.distiller.result()
        if isinstance(result, dict):
            raise AttributeError(f"this run distils several students {sorted(result)}: use .students[name].predict")
        return result.predict(observation, state, episode_start, deterministic)

    def learn(self, n_steps: int, callback: DistillCallback = None, log_interval: int = 10) -> OfflineDistillation:
        """
        Collect ``n_steps`` environment steps (summed over the environments), training the students as they come.

        :param n_steps: environment steps (counted from 0 at each call; the memory and the students carry over)
        :param callback: SB3 callback(s), or ``fn(steps, students)`` called after every update (``False`` stops)
        :param log_interval: updates between two logger dumps
        :return: this object
        """
        callback = self._start_learning(n_steps, "n_steps", log_interval, callback)
        self.collector.reset(n_steps, self._env_seed)
        self.num_timesteps = 0
        callback.on_training_start(locals(), globals())
        with eval_mode(self.model.policy):  # for the whole run: labelling each step then costs no mode switch
            while self.num_timesteps < n_steps:
                self.collector.collect_step()
                self.num_timesteps = self.collector.steps
                if self.collector.n_new >= self.train_freq and len(self.collector.memory) >= self.config.batch_size:
                    self.train(n_steps)
                    if self.n_updates % log_interval == 0:
                        self._dump()
                    callback.on_rollout_end()
                if not callback.on_step():
                    break
        self._dump()
        callback.on_training_end()
        return self

    def train(self, n_steps: int) -> None:
        """One update of the students on ``epochs`` samples per new transition from the memory."""
        obs, targets = self.collector.take(self.config.epochs, self.distiller.rng)
        metrics = self.distiller.update(obs, 1.0 - self.num_timesteps / n_steps, epochs=1, targets=targets)
        self.n_updates += 1
        self.distiller.record(self.logger, metrics, self.n_updates)
        self.last_metrics = metrics

    def _dump(self) -> None:
        self.collector.record(self.logger)
        self.logger.dump(self.num_timesteps)


def distill(
    teacher: BaseAlgorithm | str | os.PathLike[str],
    student: StudentSpec | Mapping[str, Any],
    env: VecEnv | gym.Env | str | None,
    n_steps: int,
    *,
    callback: DistillCallback = None,
    log_interval: int = 10,
    **options: Any,
) -> BasePolicy | dict[str, BasePolicy]:
    """
    Distil a trained agent into small students, offline: ``OfflineDistillation(...).learn(n_steps)`` in one call.

    :param teacher: the teacher: a model, the path of its zip, or an RL-Zoo run folder
    :param student: the student(s), see :class:`OfflineDistillation`
    :param env: the environment (``None``: the RL-Zoo run's own), see :class:`OfflineDistillation`
    :param n_steps: environment steps to collect (summed over the vectorised environments)
    :param callback: SB3 callback(s) (``EvalCallback`` evaluates the student), or a function called after
        every update with (steps so far, the students); returning ``False`` stops the distillation early
    :param log_interval: updates between two logger dumps
    :param options: the other options of :class:`OfflineDistillation` (``collect``, ``student_kwargs``,
        ``loss``, ``learning_rate``, ``batch_size``, ``epochs``, ``seed``...)
    :return: the student, or the dict name -> student
    """
    check_positive("n_steps", n_steps, integer=True)
    run = OfflineDistillation(teacher, student, env, **options)
    return run.learn(n_steps, callback=callback, log_interval=log_interval).distiller.result()
