"""Where a distillation's observations come from: one protocol, the buffers SB3 fills, and a bounded memory.

Every path is the same loop (observations -> the teacher's targets -> the students' update); only the
source differs:

- :class:`RolloutSource`: an on-policy teacher's rollout buffer (real-time, PPO/A2C/TRPO), every observation
  seen ``epochs`` times;
- :class:`ReplaySource`: an off-policy teacher's replay buffer (real-time, DQN/QR-DQN/SAC/TD3), ``epochs``
  samples per new transition;
- :class:`TargetMemory`: observations already labelled by the teacher, filled by an environment collector
  (:mod:`sb3_distill.offline`) or a generator (:mod:`sb3_distill.datafree`), sampled ``epochs`` times per new
  observation.

The buffer sources read SB3's arrays with the distiller's own generator: they never call
``rollout_buffer.get()`` or ``replay_buffer.sample()``, which draw from the global NumPy generator the teacher
trains with.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from sb3_distill.outputs import LOGITS, PolicyOutputs, ScoreKind


class ObservationSource(Protocol):
    """What a distillation draws its observations from (the teacher labels them unless the source already did)."""

    @property
    def n_new(self) -> int:
        """Observations (or transitions) arrived since the last :meth:`take`."""
        ...

    def on_rollout_start(self) -> None:
        """The teacher starts collecting."""

    def on_rollout_end(self) -> None:
        """The teacher has collected new data."""

    def on_training_end(self) -> None:
        """The teacher's ``learn`` ends (possibly in the middle of a rollout)."""

    def on_teacher_idle(self) -> None:
        """The teacher has not updated since the last distillation: data that arrived meanwhile is not counted."""

    def take(self, epochs: int, rng: np.random.Generator) -> tuple[np.ndarray, int, PolicyOutputs | None]:
        """
        :param epochs: the configured passes (on-policy) or samples per new transition (off-policy)
        :param rng: the distiller's generator
        :return: observations as the teacher's policy takes them, how many passes to make over them, and the
            teacher's outputs for them when the source already has them (``None``: the teacher labels them)
        """
        ...


def source_for(
    model: OnPolicyAlgorithm | OffPolicyAlgorithm, kind: ScoreKind | None = None
) -> RolloutSource | ReplaySource:
    """
    :param model: the training teacher
    :param kind: the kind of its outputs (``"logits"``: an on-policy teacher's targets are recorded as it acts)
    :return: the buffer source of a training teacher (rollouts on-policy, replay off-policy)
    """
    if isinstance(model, OnPolicyAlgorithm):
        return RolloutSource(model, record_targets=kind == LOGITS and isinstance(model.policy, ActorCriticPolicy))
    return ReplaySource(model)


class RolloutSource:
    """
    On-policy teachers: the rollouts collected since the last distillation (already normalised by SB3).

    With ``record_targets``, the teacher's logits are recorded as it computes them to act (a forward hook on
    its ``action_net`` while it collects) and its values taken from the rollout buffer, so that distillation
    needs no second pass of the teacher over the rollout: the targets are the teacher's outputs as it acted,
    before its update on that rollout (Sun & Fazli's setting). When anything else ran the teacher's
    ``action_net`` during collection (an ``EvalCallback``, say), the counts differ and the teacher labels the
    rollout again instead.

    :param model: the teacher
    :param record_targets: record a discrete actor-critic teacher's outputs while it acts
    """

    def __init__(self, model: OnPolicyAlgorithm, record_targets: bool = False) -> None:
        self.model = model
        self.record_targets = record_targets
        self.pending: list[np.ndarray] = []
        self.pending_targets: list[PolicyOutputs | None] = []
        self._recorded: list[th.Tensor] = []
        self._hook: Any = None

    def on_teacher_idle(self) -> None:
        pass

    def on_rollout_start(self) -> None:
        if self.record_targets and self._hook is None:
            self._recorded = []
            action_net = self.model.policy.action_net

            def record(module: nn.Module, inputs: Any, output: th.Tensor) -> None:
                self._recorded.append(output.detach())

            self._hook = action_net.register_forward_hook(record)

    def on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        filled = buffer.buffer_size if buffer.full else buffer.pos
        # ``reset()`` allocates new arrays for the next rollout, so this view stays valid and unchanged.
        obs = buffer.observations[:filled]
        self.pending.append(obs.reshape(-1, *obs.shape[2:]))
        self.pending_targets.append(self._recorded_targets(filled, buffer.n_envs))

    def on_training_end(self) -> None:
        """Stop recording: a rollout cut short by a callback never reaches :meth:`on_rollout_end`."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._recorded = []

    def _recorded_targets(self, filled: int, n_envs: int) -> PolicyOutputs | None:
        """The recorded outputs for this rollout, if there is exactly one per step and environment."""
        if self._hook is None:
            return None
        self._hook.remove()
        self._hook = None
        recorded, self._recorded = self._recorded, []
        if len(recorded) != filled or any(output.shape[0] != n_envs for output in recorded):
            return None
        scores = th.stack(recorded).reshape(filled * n_envs, -1)
        values = th.as_tensor(self.model.rollout_buffer.values[:filled].reshape(-1), device=scores.device)
        return PolicyOutputs(scores, values)

    @property
    def n_new(self) -> int:
        return sum(len(obs) for obs in self.pending)

    def take(self, epochs: int, rng: np.random.Generator) -> tuple[np.ndarray, int, PolicyOutputs | None]:
        """:return: every pending observation, to be seen ``epochs`` times, with the recorded targets if complete."""
        obs = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        parts, self.pending, self.pending_targets = self.pending_targets, [], []
        if any(part is None for part in parts):
            return obs, epochs, None
        complete = [part for part in parts if part is not None]
        if len(complete) == 1:
            return obs, epochs, complete[0]
        values = [part.values for part in complete]
        merged_values = None if any(v is None for v in values) else th.cat(values)  # type: ignore[arg-type]
        return obs, epochs, PolicyOutputs(th.cat([part.scores for part in complete]), merged_values)


class ReplaySource:
    """Off-policy teachers: a uniform sample of the replay buffer, normalised as SB3 normalises its samples."""

    def __init__(self, model: OffPolicyAlgorithm) -> None:
        self.model = model
        self.timesteps_seen = model.num_timesteps

    def on_rollout_start(self) -> None:
        pass

    def on_rollout_end(self) -> None:
        pass

    def on_training_end(self) -> None:
        pass

    @property
    def n_new(self) -> int:
        return self.model.num_timesteps - self.timesteps_seen

    def on_teacher_idle(self) -> None:
        """Do not count the transitions collected so far (the teacher has not learned from them yet)."""
        self.timesteps_seen = self.model.num_timesteps

    def take(self, epochs: int, rng: np.random.Generator) -> tuple[np.ndarray, int, PolicyOutputs | None]:
        """:return: ``epochs`` observations per new transition, drawn from the buffer, to be seen once."""
        buffer = self.model.replay_buffer
        assert buffer is not None
        n_samples = epochs * self.n_new
        self.timesteps_seen = self.model.num_timesteps
        upper = buffer.buffer_size if buffer.full else buffer.pos
        rows = rng.integers(0, upper, size=n_samples)
        envs = rng.integers(0, buffer.n_envs, size=n_samples)
        obs = buffer.observations[rows, envs]
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None:  # replay buffers hold raw observations
            normalized = vec_normalize.normalize_obs(obs)
            assert isinstance(normalized, np.ndarray)
            return normalized, 1, None
        return obs, 1, None


class TargetMemory:
    """
    A bounded first-in-first-out memory of observations and the teacher's outputs for them.

    :param size: how many observations it holds
    :param observation_space: the teacher's observation space (its dtype is kept: uint8 frames stay uint8)
    :param n_actions: number of action scores per observation (the action dimension for continuous actions)
    :param with_values: also keep the teacher's state values
    :param with_log_std: also keep the log std of a Gaussian teacher
    :param dtype: the observations' dtype in memory (``None``: the observation space's)
    """

    def __init__(
        self,
        size: int,
        observation_space: spaces.Box,
        n_actions: int,
        with_values: bool,
        with_log_std: bool = False,
        dtype: np.dtype | type | None = None,
    ) -> None:
        self.size = size
        self.obs = np.zeros((size, *observation_space.shape), dtype=observation_space.dtype if dtype is None else dtype)
        self.scores = np.zeros((size, n_actions), dtype=np.float32)
        self.values = np.zeros(size, dtype=np.float32) if with_values else None
        self.log_std = np.zeros((size, n_actions), dtype=np.float32) if with_log_std else None
        self.pos = 0
        self.full = False

    def __len__(self) -> int:
        return self.size if self.full else self.pos

    def add(self, obs: np.ndarray, targets: PolicyOutputs | None = None) -> None:
        """
        Store a batch of observations with the teacher's outputs for them (the oldest make room).

        :param obs: the observations (only the last ``size`` are kept when more come at once)
        :param targets: the teacher's outputs for them; ``None``: to be set later with :meth:`set_targets`
        """
        first = max(0, len(obs) - self.size)
        obs = obs[first:]
        rows = (self.pos + np.arange(len(obs))) % self.size
        self.obs[rows] = obs
        if targets is not None:
            values, log_std = targets.values, targets.log_std
            self.set_targets(
                rows,
                PolicyOutputs(
                    targets.scores[first:],
                    None if values is None else values[first:],
                    None if log_std is None else log_std[first:],
                ),
            )
        self.full = self.full or self.pos + len(obs) >= self.size
        self.pos = int((self.pos + len(obs)) % self.size)

    def set_targets(self, rows: np.ndarray, targets: PolicyOutputs) -> None:
        """Set the teacher's outputs for the observations in ``rows``."""
        self.scores[rows] = targets.scores.cpu().numpy()
        if self.values is not None and targets.values is not None:
            self.values[rows] = targets.values.cpu().numpy()
        if self.log_std is not None and targets.log_std is not None:
            self.log_std[rows] = targets.log_std.cpu().numpy()

    def get(self, rows: np.ndarray, device: th.device) -> tuple[th.Tensor, PolicyOutputs]:
        """:return: the observations in ``rows`` with their targets, on ``device``"""
        values = None if self.values is None else th.as_tensor(self.values[rows], device=device)
        log_std = None if self.log_std is None else th.as_tensor(self.log_std[rows], device=device)
        targets = PolicyOutputs(th.as_tensor(self.scores[rows], device=device), values, log_std)
        return th.as_tensor(self.obs[rows], device=device), targets

    def sample(self, n: int, rng: np.random.Generator, device: th.device) -> tuple[th.Tensor, PolicyOutputs]:
        """:return: ``n`` observations drawn uniformly (with replacement), with their targets, on ``device``."""
        return self.get(rng.integers(0, len(self), size=n), device)
