"""Simulator-free distillation: a generator invents observations, the student learns the teacher's answers to them.

After the "Generative Adversarial Simulator" (Raiman, 2020): no environment and no stored trajectories,
only the teacher. Each iteration, top to bottom:

1. a generator ``G(z, a)``, conditioned on an action ``a`` (the same number of samples for every action),
   makes a batch of observations inside the observation space's bounds;
2. the generator takes a gradient step on
   ``coverage_coef * CE(teacher(x), a)``      -- the teacher must pick ``a`` on ``G(z, a)`` (action coverage)
   ``- adversarial_coef * D(teacher(x), student(x))`` -- where student and teacher disagree (adversarial)
   ``- diversity_coef * mean pairwise distance`` within each action class (diversity);
   the teacher and the student are only read: gradients flow to the generator's parameters alone;
3. fresh samples, labelled once by the teacher, go to a bounded memory (the offline mode's
   :class:`~sb3_distill.sources.TargetMemory`), and the :class:`~sb3_distill.distiller.Distiller` trains the
   students on a batch drawn from it;
4. every ``reinit_every`` iterations the generator starts again from new random weights, so the memory
   collects many exemplars per action rather than one prototype each.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import configure_logger
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize
from torch import nn

from sb3_distill.callbacks import DistillationRun, DistillCallback
from sb3_distill.distiller import DistillConfig, Distiller, check_positive
from sb3_distill.evaluation import trajectory_agreement
from sb3_distill.losses import DEFAULT_TEMPERATURE, kl_divergence
from sb3_distill.normalization import frozen_vec_normalize
from sb3_distill.outputs import LOGITS, Q_VALUES, PolicyOutputs, policy_outputs
from sb3_distill.sources import TargetMemory
from sb3_distill.students import StudentSpec, student_specs
from sb3_distill.teachers import Teacher, eval_mode, open_teacher, teacher_normalization

#: What simulator-free distillation gives for Q-value teachers, said where it starts.
Q_VALUE_WARNING = (
    "simulator-free distillation of a Q-value teacher (DQN, QR-DQN) is not reliable: a Q-network's greedy "
    "action away from the states it learned on is arbitrary, and the generated observations are mostly there. "
    "Measured with RL-Zoo's published DQN CartPole agent, [8] student, 1000 iterations, seeds 0-2: returns "
    "19 / 15 / 50 (random: 22). Distil it with an environment (sb3_distill.distill) instead."
)


def observation_bounds(space: spaces.Box, obs_bounds: tuple[Any, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """
    Finite bounds for every observation dimension: the space's own, or the user's where it has none.

    :param space: the teacher's observation space
    :param obs_bounds: ``(low, high)``, scalars or arrays of the observation's shape (they override the space's)
    :return: ``low`` and ``high`` arrays of the observation's shape
    """
    if not isinstance(space, spaces.Box):
        raise TypeError(f"the generator models Box observations, not {space}")
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    if obs_bounds is not None:
        try:
            low = np.broadcast_to(np.asarray(obs_bounds[0], dtype=np.float64), space.shape).copy()
            high = np.broadcast_to(np.asarray(obs_bounds[1], dtype=np.float64), space.shape).copy()
        except (ValueError, TypeError, IndexError) as error:
            raise ValueError(
                f"obs_bounds must be (low, high), scalars or arrays of shape {space.shape}: {error}"
            ) from error
    unbounded = np.flatnonzero(~(np.isfinite(low) & np.isfinite(high)))
    if len(unbounded):
        raise ValueError(
            f"observation dimensions {unbounded.tolist()} (flat indices) of {space} are unbounded: pass "
            f"obs_bounds=(low, high), scalars or arrays of shape {space.shape}, with the range to generate"
        )
    if np.any(high <= low):
        raise ValueError("obs_bounds: every high must be greater than its low")
    return low, high


def normalized_bounds(
    space: spaces.Box, obs_bounds: tuple[Any, Any] | None, normalization: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """
    Bounds in the space a ``VecNormalize`` teacher acts on: ``clip((x - mean) / sqrt(var + eps), -clip, clip)``.

    :param space: the environment's observation space
    :param obs_bounds: ``(low, high)`` in the environment's units, where given; unbounded dimensions
        take VecNormalize's clipping range
    :param normalization: the teacher's statistics (:func:`~sb3_distill.students.obs_normalization_of`)
    :return: ``low`` and ``high`` of the normalised observations
    """
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    if obs_bounds is not None:
        low, high = observation_bounds(space, obs_bounds)
    scale = np.sqrt(normalization["var"] + normalization["epsilon"])
    clip = normalization["clip_obs"]
    normalized = [np.clip((bound - normalization["mean"]) / scale, -clip, clip) for bound in (low, high)]
    return normalized[0], np.maximum(normalized[1], normalized[0] + 1e-6)


class ConditionalGenerator(nn.Module):
    """
    ``G(z, a)``: noise and a one-hot action to an observation inside ``[low, high]``.

    Binary (bool) observations are rounded with a straight-through gradient; everything else is a
    sigmoid scaled to the bounds (uint8 images come out in [0, 255], as the teacher's preprocessing expects).

    :param observation_space: the teacher's observation space (as its policy sees it)
    :param low: lower bounds, the observation's shape
    :param high: upper bounds
    :param n_actions: number of actions to condition on
    :param latent_dim: size of the noise
    :param hidden: width of the two hidden layers
    """

    low: th.Tensor
    span: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Box,
        low: np.ndarray,
        high: np.ndarray,
        n_actions: int,
        latent_dim: int = 32,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.shape = observation_space.shape
        self.binary = observation_space.dtype == np.bool_
        self.n_actions = n_actions
        self.latent_dim = latent_dim
        self.register_buffer("low", th.as_tensor(low, dtype=th.float32))
        self.register_buffer("span", th.as_tensor(high - low, dtype=th.float32))
        self.net = nn.Sequential(
            nn.Linear(latent_dim + n_actions, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, int(np.prod(self.shape))),
        )
        # Each (re-)initialised generator starts around its own random point of the box, not at its centre,
        # so that successive generators explore different regions.
        output = self.net[-1]
        assert isinstance(output, nn.Linear)
        nn.init.uniform_(output.bias, -2.0, 2.0)
        nn.init.normal_(output.weight, std=4.0 / np.sqrt(hidden))  # the noise spreads the samples from the start

    def forward(self, z: th.Tensor, actions: th.Tensor) -> th.Tensor:
        one_hot = F.one_hot(actions, self.n_actions).float()
        unit = th.sigmoid(self.net(th.cat([z, one_hot], dim=1))).view(-1, *self.shape)
        if self.binary:
            unit = unit + ((unit > 0.5).float() - unit).detach()  # straight-through rounding
        return self.low + self.span * unit


def distinct_exemplars(obs: np.ndarray, low: np.ndarray, high: np.ndarray, radius: float = 0.1) -> int:
    """
    How many observations are pairwise further apart than ``radius`` (greedy cover, in units of the bounds' range).

    :param obs: observations of one action class
    :param low: lower bounds
    :param high: upper bounds
    :param radius: distance, as a fraction of each dimension's range (RMS over dimensions)
    :return: the number of distinct exemplars
    """
    points = ((obs.reshape(len(obs), -1) - low.reshape(-1)) / (high - low).reshape(-1)).astype(np.float64)
    centres: list[np.ndarray] = []
    for point in points:
        if not centres or np.sqrt(np.mean((np.stack(centres) - point) ** 2, axis=1)).min() > radius:
            centres.append(point)
    return len(centres)


class GeneratorSource:
    """
    The simulator-free observation source: conditional generators, trained against teacher and students, fill
    the labelled memory the students learn from (steps 1-4 of the module's loop).

    :param distiller: the distiller (its teacher labels, its students are the adversaries)
    :param memory: where labelled samples go
    :param low: lower bounds of the generated observations
    :param high: upper bounds
    :param batch_size: samples per iteration, the same number for every action
    :param latent_dim: size of the noise
    :param learning_rate: the generators' (Adam) learning rate
    :param coefs: weights of the coverage, adversarial and diversity terms
    :param reinit_every: iterations between re-initialisations (``None``: never)
    :param temperature: softens Q-values (and logits) in the coverage and adversarial terms
    :param seed: seed of the generators' weights and noise
    """

    def __init__(
        self,
        distiller: Distiller,
        memory: TargetMemory,
        low: np.ndarray,
        high: np.ndarray,
        batch_size: int,
        latent_dim: int,
        learning_rate: float,
        coefs: tuple[float, float, float],
        reinit_every: int | None,
        temperature: float,
        seed: int,
    ) -> None:
        self.distiller = distiller
        self.teacher = distiller.teacher
        self.memory = memory
        self.low, self.high = low, high
        self.n_actions = int(self.teacher.action_space.n)  # type: ignore[union-attr]
        self.batch_size = batch_size
        self.latent_dim = latent_dim
        self.learning_rate = learning_rate
        self.coverage_coef, self.adversarial_coef, self.diversity_coef = coefs
        self.reinit_every = reinit_every
        self.temperature = temperature
        self.rng = th.Generator(device="cpu").manual_seed(seed)
        self.generator, self.optimizer = self._new_generator()

    def _new_generator(self) -> tuple[ConditionalGenerator, th.optim.Optimizer]:
        with th.random.fork_rng(devices=[]):
            th.random.default_generator.manual_seed(int(th.randint(2**62, (1,), generator=self.rng)))
            generator = ConditionalGenerator(
                self.teacher.observation_space, self.low, self.high, self.n_actions, self.latent_dim
            ).to(self.teacher.device)
        return generator, th.optim.Adam(generator.parameters(), lr=self.learning_rate)

    def _sample(self) -> tuple[th.Tensor, th.Tensor]:
        per_action = self.batch_size // self.n_actions
        actions = th.arange(self.n_actions).repeat_interleave(per_action).to(self.teacher.device)
        z = th.randn(len(actions), self.latent_dim, generator=self.rng).to(self.teacher.device)
        return self.generator(z, actions), actions

    def generate(self, iteration: int) -> dict[str, float]:
        """
        One generator step, then fresh samples, labelled once by the teacher, into the memory.

        :param iteration: the iteration, from 1 (re-initialises the generator every ``reinit_every``)
        :return: the generator's loss terms
        """
        if self.reinit_every is not None and iteration > 1 and (iteration - 1) % self.reinit_every == 0:
            self.generator, self.optimizer = self._new_generator()
        # The generator's step: coverage - adversarial - diversity; teacher and students only read.
        obs, actions = self._sample()
        with eval_mode(self.teacher.policy):
            teacher_scores = policy_outputs(self.teacher.policy, obs, with_values=False).scores
        # Coverage asks for the conditioned action, not for certainty: samples the teacher already gives to
        # their action add nothing, so a generator stays where it found its exemplars.
        missed = (teacher_scores.argmax(dim=1) != actions).float()
        coverage = (F.cross_entropy(teacher_scores / self.temperature, actions, reduction="none") * missed).mean()
        divergence = th.stack(
            [
                kl_divergence(policy_outputs(s, obs, with_values=False).scores, teacher_scores, self.temperature)
                for s in self.distiller.students.values()
            ]
        ).mean()
        diversity = _within_class_distance(obs, actions, self.low, self.high, self.n_actions)
        loss = self.coverage_coef * coverage - self.adversarial_coef * divergence - self.diversity_coef * diversity
        grads = th.autograd.grad(loss, list(self.generator.parameters()))  # nothing else gets gradients
        for param, grad in zip(self.generator.parameters(), grads, strict=True):
            param.grad = grad
        self.optimizer.step()
        with th.no_grad():
            fresh, _ = self._sample()
        self.memory.add(
            fresh.cpu().numpy().astype(self.memory.obs.dtype), self.teacher.targets(fresh, with_values=False)
        )
        return {"coverage_loss": coverage.item(), "divergence": divergence.item(), "diversity": diversity.item()}

    def take(self, rng: np.random.Generator) -> tuple[th.Tensor, PolicyOutputs]:
        """:return: a batch of labelled samples from the memory"""
        return self.memory.sample(self.batch_size, rng, self.teacher.device)

    def record(self, logger: Logger) -> None:
        """Log the memory's exemplars per action, and how many of a recent window are distinct."""
        memory = self.memory
        labels = memory.scores[: len(memory)].argmax(axis=1)
        recent = slice(max(0, len(memory) - 2000), len(memory))  # distinctness of a recent window: O(n * k)
        for action in range(self.n_actions):
            logger.record(f"datafree/exemplars_{action}", int((labels == action).sum()))
            window = memory.obs[recent][labels[recent] == action]
            distinct = distinct_exemplars(window, self.low, self.high) if len(window) else 0
            logger.record(f"datafree/distinct_{action}", distinct)


class DataFreeDistillation(DistillationRun):
    """
    Distil a teacher into students with no environment, as an SB3-style object: set up, then ``learn``.

    :param teacher: a PPO, A2C, TRPO, DQN or QR-DQN model (discrete actions), the path of its zip, or an
        RL-Zoo run folder (a ``VecNormalize`` teacher's statistics are read from beside its zip)
    :param student: as for :func:`sb3_distill.distill` (alias, class, instance, module, or a dict of them)
    :param student_kwargs: ``policy_kwargs`` of a single student
    :param student_algo: the algorithm whose policy aliases ``student`` names (``"ppo"``: ``"MlpPolicy"`` is an
        actor-critic, ready for :func:`~sb3_distill.to_ppo`, even from a DQN teacher); ``None``: the teacher's
    :param obs_bounds: ``(low, high)`` to generate within, required where the observation space is unbounded.
        A teacher trained under ``VecNormalize`` (a model that still holds its env) acts on normalised
        observations: they are generated within these bounds normalised with its statistics (unbounded
        dimensions: VecNormalize's ``clip_obs`` range), and the students record the statistics for
        :func:`~sb3_distill.wrap_env`
    :param batch_size: generated observations per iteration (split evenly over the actions)
    :param learning_rate: the students' learning rate
    :param generator_learning_rate: the generator's (Adam) learning rate
    :param latent_dim: size of the generator's noise
    :param coverage_coef: weight of the action-coverage term (the teacher must pick the conditioned action)
    :param adversarial_coef: weight of the adversarial term (student-teacher divergence, maximised)
    :param diversity_coef: weight of the diversity term (mean distance within an action class, maximised)
    :param reinit_every: iterations between generator re-initialisations (``None``: never)
    :param buffer_size: generated observations kept, with the teacher's outputs, for the students to learn from
    :param loss: the distillation loss (``None``: ``"kl"``)
    :param temperature: KL temperature (``None``: 0.01 for Q-value teachers, 1.0 for logits)
    :param eval_env: optional real environment, only to report the student's return and agreement on real
        states every ``eval_freq`` iterations; the students never train on it
    :param eval_freq: iterations between evaluations
    :param n_eval_episodes: episodes per evaluation
    :param seed: seeds the generator, the students and the sampling
    :param device: where everything runs
    :param logger: an SB3 logger (default: SB3's ``configure_logger``: stdout when ``verbose >= 1``)
    :param tensorboard_log: a folder for TensorBoard logs, when no ``logger`` is given
    :param verbose: 1 prints the metrics
    """

    def __init__(
        self,
        teacher: BaseAlgorithm | str | os.PathLike[str],
        student: StudentSpec | Mapping[str, Any],
        student_kwargs: dict[str, Any] | None = None,
        student_algo: str | type[BaseAlgorithm] | None = None,
        obs_bounds: tuple[Any, Any] | None = None,
        batch_size: int = 256,
        learning_rate: float | Schedule = 1e-3,
        generator_learning_rate: float = 1e-3,
        latent_dim: int = 32,
        coverage_coef: float = 1.0,
        adversarial_coef: float = 1.0,
        diversity_coef: float = 0.1,
        reinit_every: int | None = 50,
        buffer_size: int = 100_000,
        loss: str | None = None,
        temperature: float | None = None,
        eval_env: VecEnv | None = None,
        eval_freq: int = 500,
        n_eval_episodes: int = 5,
        seed: int | None = None,
        device: th.device | str = "auto",
        logger: Logger | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
    ) -> None:
        coefs = (coverage_coef, adversarial_coef, diversity_coef)
        _check_options(generator_learning_rate, coefs, reinit_every, buffer_size, eval_freq, batch_size)
        specs = student_specs(student, student_kwargs, student_algo)
        self.model, agent = open_teacher(teacher, device=device)
        view = Teacher(self.model)
        if view.kind not in (LOGITS, Q_VALUES):
            raise TypeError("simulator-free distillation supports teachers of discrete actions (PPO, A2C, DQN, QR-DQN)")
        if view.kind == Q_VALUES:
            warnings.warn(Q_VALUE_WARNING, UserWarning, stacklevel=2)
        n_actions = int(view.action_space.n)  # type: ignore[union-attr]
        if batch_size < n_actions:
            raise ValueError(f"batch_size must be at least the number of actions ({n_actions}), got {batch_size}")
        normalization = teacher_normalization(self.model, agent)
        if normalization is None:
            low, high = observation_bounds(view.observation_space, obs_bounds)
        else:  # the teacher acts on VecNormalize's clipped, normalised observations: generate those
            low, high = normalized_bounds(view.observation_space, obs_bounds, normalization)
        config = DistillConfig(
            loss=loss,
            temperature=temperature,
            learning_rate=learning_rate,
            batch_size=batch_size,
            epochs=1,
            distill_value=False,
        )
        generator_seed, students_seed, distiller_seed = np.random.SeedSequence(seed).generate_state(3)
        # The students record the statistics: wrap_env applies them at inference.
        self.distiller = Distiller.for_teacher(
            self.model, specs, config, int(students_seed), int(distiller_seed), normalization=normalization
        )
        if eval_env is not None and normalization is not None and unwrap_vec_normalize(eval_env) is None:
            eval_env = frozen_vec_normalize(eval_env, normalization)
        self.eval_env, self.eval_freq, self.n_eval_episodes = eval_env, eval_freq, n_eval_episodes
        self.source = GeneratorSource(
            self.distiller,
            TargetMemory(buffer_size, view.observation_space, n_actions, with_values=False),
            low,
            high,
            batch_size,
            latent_dim,
            generator_learning_rate,
            coefs,
            reinit_every,
            temperature if temperature is not None else DEFAULT_TEMPERATURE[view.kind],
            int(generator_seed),
        )
        self.logger = logger or configure_logger(verbose, tensorboard_log, "DataFreeDistillation")
        self.num_timesteps = 0

    def get_env(self) -> VecEnv | None:
        """:return: the evaluation environment, if any: there is no training environment"""
        return self.eval_env

    def learn(
        self, n_iterations: int, callback: DistillCallback = None, log_interval: int = 100
    ) -> DataFreeDistillation:
        """
        Generator and student steps, ``n_iterations`` times (``num_timesteps`` counts iterations).

        :param n_iterations: iterations
        :param callback: SB3 callback(s) (``on_step`` after every iteration), or ``fn(iterations, students)``
        :param log_interval: iterations between two logger dumps
        :return: this object
        """
        callback = self._start_learning(n_iterations, "n_iterations", log_interval, callback)
        callback.on_training_start(locals(), globals())
        start = time.perf_counter()
        for iteration in range(1, n_iterations + 1):
            losses = self.source.generate(iteration)
            obs, targets = self.source.take(self.distiller.rng)
            metrics = self.distiller.update(obs, 1.0 - iteration / n_iterations, epochs=1, targets=targets)
            self.num_timesteps = iteration
            self.distiller.record(self.logger, metrics, iteration)
            for key, value in losses.items():
                self.logger.record(f"datafree/{key}", value)
            if self.eval_env is not None and iteration % self.eval_freq == 0:
                _evaluate(self.logger, self.model, self.students, self.eval_env, self.n_eval_episodes)
            if iteration % log_interval == 0 or iteration == n_iterations:
                self.source.record(self.logger)
                self.logger.record("time/elapsed_s", time.perf_counter() - start)
                self.logger.dump(iteration)
            callback.on_rollout_end()
            if not callback.on_step():
                break
        callback.on_training_end()
        return self


def _check_options(
    generator_learning_rate: float,
    coefs: tuple[float, float, float],
    reinit_every: int | None,
    buffer_size: int,
    eval_freq: int,
    batch_size: int,
) -> None:
    check_positive("generator_learning_rate", generator_learning_rate)
    for name, value in zip(("coverage_coef", "adversarial_coef", "diversity_coef"), coefs, strict=True):
        check_positive(name, value, allow_zero=True)
    if reinit_every is not None:
        check_positive("reinit_every", reinit_every, integer=True)
    check_positive("buffer_size", buffer_size, integer=True)
    check_positive("eval_freq", eval_freq, integer=True)
    check_positive("batch_size", batch_size, integer=True)


def distill_datafree(
    teacher: BaseAlgorithm | str | os.PathLike[str],
    student: StudentSpec | Mapping[str, Any],
    n_iterations: int,
    *,
    callback: DistillCallback = None,
    log_interval: int = 100,
    **options: Any,
) -> BasePolicy | dict[str, BasePolicy]:
    """
    Distil a teacher into students with no environment: ``DataFreeDistillation(...).learn(n_iterations)``.

    :param teacher: a model of discrete actions, the path of its zip, or an RL-Zoo run folder
    :param student: the student(s), see :class:`DataFreeDistillation`
    :param n_iterations: generator + student steps
    :param callback: SB3 callback(s) (``on_step`` after every iteration), or ``fn(iterations, students)``;
        ``False`` stops
    :param log_interval: iterations between two logger dumps
    :param options: the other options of :class:`DataFreeDistillation` (``obs_bounds``, ``student_kwargs``,
        ``batch_size``, ``reinit_every``, ``eval_env``, ``seed``...)
    :return: the student, or the dict name -> student
    """
    check_positive("n_iterations", n_iterations, integer=True)
    run = DataFreeDistillation(teacher, student, **options)
    return run.learn(n_iterations, callback=callback, log_interval=log_interval).distiller.result()


def _within_class_distance(
    obs: th.Tensor, actions: th.Tensor, low: np.ndarray, high: np.ndarray, n_actions: int
) -> th.Tensor:
    """Mean pairwise distance between generated observations of the same action, in units of the bounds' range."""
    span = th.as_tensor((high - low).reshape(-1), dtype=th.float32, device=obs.device)
    flat = obs.reshape(len(obs), -1) / span
    distances = [
        th.pdist(flat[actions == action]).mean() for action in range(n_actions) if (actions == action).sum() > 1
    ]
    return th.stack(distances).mean() if distances else flat.new_zeros(())


def _evaluate(
    logger: Logger, teacher: BaseAlgorithm, students: dict[str, BasePolicy], env: VecEnv, n_episodes: int
) -> None:
    """Report each student's return and agreement on real states (it never trains on them)."""
    for name, student in students.items():
        prefix = "eval/" if len(students) == 1 else f"eval/{name}/"
        returns, _ = evaluate_policy(student, env, n_eval_episodes=n_episodes, deterministic=True)
        logger.record(prefix + "student_return", float(np.mean(returns)))
        logger.record(prefix + "agreement", trajectory_agreement(teacher, student, env, n_steps=500, actor="student"))
