"""What a teacher is: an SB3 model whose policy gives distillation targets."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import torch as th
from gymnasium import spaces
from sb3_contrib import QRDQN, TRPO
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize
from torch import nn

from sb3_distill.agents import (
    LEGACY_CUSTOM_OBJECTS,
    SavedAgent,
    as_vec_env,
    legacy_gym_pickles,
    read_vec_normalize,
)
from sb3_distill.normalization import frozen_vec_normalize, obs_normalization_of
from sb3_distill.outputs import (
    PolicyOutputs,
    count_acting_parameters,
    gives_values,
    is_supported_policy,
    policy_outputs,
    score_kind,
)
from sb3_distill.spaces import canonical_space, spaces_mismatch

#: Teacher algorithms, by name. Their subclasses are accepted too.
SUPPORTED_ALGORITHMS: tuple[type[BaseAlgorithm], ...] = (PPO, A2C, TRPO, DQN, QRDQN, SAC, TD3)
#: Teachers of continuous (Box) actions.
CONTINUOUS_ALGORITHMS: tuple[type[BaseAlgorithm], ...] = (PPO, A2C, TRPO, SAC, TD3)

#: Largest batch the teacher evaluates in one forward pass (bounds memory for image observations).
TARGET_CHUNK_SIZE = 4096


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """
    Put ``module`` in eval mode for the block, then restore every submodule's own mode exactly.

    Called for every environment step of offline collection: nothing is switched when nothing is in training
    mode (``module.train`` would walk the tree and set every module, twice).

    :param module: the teacher's policy
    """
    modes = [(m, m.training) for m in module.modules()]
    if not any(training for _, training in modes):
        yield
        return
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class Teacher:
    """
    Reads distillation targets from an SB3 model, never changing it.

    :param model: a PPO, A2C, DQN or QR-DQN model with a ``Discrete`` action space, or a PPO, A2C, SAC or
        TD3 model with a ``Box`` action space; ``Box`` observations. Or a policy of one of these alone (the
        frozen starting point that fine-tuning is anchored to, say); then :attr:`model` is ``None``.
    """

    def __init__(self, model: BaseAlgorithm | BasePolicy) -> None:
        if isinstance(model, BasePolicy):
            if not is_supported_policy(model):
                raise TypeError(f"unsupported teacher policy {type(model).__name__}")
            self.model: BaseAlgorithm | None = None
            self.policy: BasePolicy = model
        else:
            check_teacher(model)
            self.model = model
            self.policy = model.policy
        self._device: th.device | None = None
        #: ``"logits"`` (discrete actor-critic), ``"q_values"`` (DQN, QR-DQN: the mean of its quantiles),
        #: ``"gaussian"`` (continuous actor-critic) or ``"actions"`` (SAC, TD3)
        self.kind = score_kind(self.policy)
        #: whether targets include state values (an actor-critic's value head, a Q-value teacher's max Q)
        self.has_values = gives_values(self.policy)
        #: parameters on the teacher's acting path
        self.acting_parameters = count_acting_parameters(self.policy)

    @property
    def name(self) -> str:
        """The teacher's algorithm (``"PPO"``), or its policy class when it is a policy alone."""
        return type(self.policy if self.model is None else self.model).__name__

    @property
    def observation_space(self) -> spaces.Box:
        """The observation space as the teacher's policy sees it (after SB3's image transposition)."""
        space = self.policy.observation_space
        assert isinstance(space, spaces.Box)
        return space

    @property
    def action_space(self) -> spaces.Discrete | spaces.Box:
        """The teacher's action space."""
        space = self.policy.action_space
        assert isinstance(space, spaces.Discrete | spaces.Box)
        return space

    @property
    def device(self) -> th.device:
        """Where the teacher's policy lives (read once: SB3 finds it by walking the parameters)."""
        if self._device is None:
            self._device = self.policy.device
        return self._device

    def targets(self, obs: th.Tensor, with_values: bool = True) -> PolicyOutputs:
        """
        The teacher's action scores (and values) for a batch, without gradients, in eval mode.

        :param obs: observation batch on the teacher's device, as stored in SB3's buffers
        :param with_values: also compute state values (value head, or ``max_a Q`` for Q-value teachers)
        :return: scores of shape ``(batch, n_actions)``, values of shape ``(batch,)`` or ``None``
        """
        with_values = with_values and self.has_values
        with th.no_grad(), eval_mode(self.policy):
            chunks = [
                policy_outputs(self.policy, obs[start : start + TARGET_CHUNK_SIZE], with_values)
                for start in range(0, len(obs), TARGET_CHUNK_SIZE)
            ]
        if len(chunks) == 1:
            return chunks[0]
        merged = [None if parts[0] is None else th.cat(parts) for parts in zip(*chunks, strict=True)]
        return PolicyOutputs(*merged)  # type: ignore[arg-type]


def check_teacher(model: object) -> None:
    """
    Check that ``model`` can teach: a supported algorithm, a ``Discrete`` action space, ``Box`` observations.

    :param model: the would-be teacher
    """
    names = ", ".join(cls.__name__ for cls in SUPPORTED_ALGORITHMS)
    if not isinstance(model, SUPPORTED_ALGORITHMS):
        raise TypeError(f"unsupported teacher algorithm {type(model).__name__}: supported teachers are {names}")
    continuous = isinstance(model.action_space, spaces.Box) and len(model.action_space.shape) == 1
    if not (
        isinstance(model.action_space, spaces.Discrete) or (continuous and isinstance(model, CONTINUOUS_ALGORITHMS))
    ):
        raise TypeError(
            f"unsupported teacher action space {model.action_space}: {type(model).__name__} teachers are "
            f"supported with Discrete action spaces, and PPO, A2C, SAC and TD3 with 1-d Box action spaces"
        )
    if not isinstance(model.observation_space, spaces.Box):
        raise TypeError(
            f"unsupported teacher observation space {model.observation_space}: expected a Box "
            f"(vector or image observations)"
        )


#: The module of a saved model's policy class -> the algorithm that loads it as a teacher.
_FAMILIES: dict[str, type[BaseAlgorithm]] = {
    "stable_baselines3.common.policies": PPO,  # PPO, A2C and TRPO: the same policies; told apart below
    "stable_baselines3.ppo.policies": PPO,
    "stable_baselines3.a2c.policies": A2C,
    "stable_baselines3.dqn.policies": DQN,
    "sb3_contrib.qrdqn.policies": QRDQN,
    "sb3_contrib.trpo.policies": TRPO,
    "stable_baselines3.sac.policies": SAC,
    "stable_baselines3.td3.policies": TD3,  # DDPG too: its actor is a TD3 actor
}

#: Policy modules of algorithms that cannot teach, and why.
_REFUSED = {
    "sb3_contrib.common.recurrent.policies": "RecurrentPPO: a recurrent policy's action depends on its hidden state",
    "sb3_contrib.common.maskable.policies": "MaskablePPO: its actions depend on masks the student never sees",
    "sb3_contrib.ars.policies": "ARS: no action scores to distil",
    "sb3_contrib.tqc.policies": "TQC: not supported yet (SAC and TD3 are)",
}


def _algorithm_of(path: str, data: dict) -> type[BaseAlgorithm]:
    """The algorithm that saved a zip, from its policy class (and PPO/A2C/TRPO's own hyperparameters)."""
    names = ", ".join(cls.__name__ for cls in SUPPORTED_ALGORITHMS)
    try:
        module = data["policy_class"]["__module__"]
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"teacher file {path!r} is not a model saved by Stable-Baselines3 (no policy class)"
        ) from error
    if module in _REFUSED:
        raise TypeError(f"teacher file {path!r} holds a {_REFUSED[module]}; supported teachers are {names}")
    if module not in _FAMILIES:
        raise TypeError(f"teacher file {path!r} holds a policy from {module}: supported teachers are {names}")
    algorithm = _FAMILIES[module]
    if algorithm is PPO:
        if "cg_max_steps" in data:  # TRPO's conjugate gradient
            algorithm = TRPO
        elif "clip_range" not in data:
            algorithm = A2C
    return algorithm


def _canonical_spaces(model: BaseAlgorithm) -> None:
    """Write a loaded model's float32-max bounds (agents saved with ``gym``) as gymnasium's infinities."""
    observation_space = canonical_space(model.observation_space)
    if observation_space is not model.observation_space:
        model.observation_space = observation_space
        model.policy.observation_space = observation_space


def open_teacher(
    teacher: BaseAlgorithm | str | os.PathLike[str], device: th.device | str = "auto"
) -> tuple[BaseAlgorithm, SavedAgent | None]:
    """
    :func:`load_teacher`, also returning where a loaded teacher's files are (its environment, its statistics).

    :param teacher: the model, the path of its zip, or an RL-Zoo run folder
    :param device: where a loaded teacher lives
    :return: the model, and its files (``None`` for a model given in memory)
    """
    if isinstance(teacher, BaseAlgorithm):
        check_teacher(teacher)
        return teacher, None
    if not isinstance(teacher, str | os.PathLike):
        raise TypeError(f"teacher must be an SB3 model or the path of a saved one, got {type(teacher).__name__}")
    agent = SavedAgent.find(teacher)
    path = str(agent.model_path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise ValueError(f"teacher file {path!r} is not a model saved by Stable-Baselines3 ({error})") from error
    algorithm = _algorithm_of(path, data)
    try:
        with legacy_gym_pickles(), warnings.catch_warnings():
            # A teacher never trains: its schedules and optimiser state are not needed.
            warnings.filterwarnings("ignore", message="Could not deserialize object", category=UserWarning)
            warnings.filterwarnings("ignore", message="You are probably loading a DQN model", category=UserWarning)
            model = algorithm.load(path, device=device, custom_objects=LEGACY_CUSTOM_OBJECTS)
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as error:
        raise ValueError(f"teacher file {path!r} does not load ({type(error).__name__}: {error})") from error
    _canonical_spaces(model)
    check_teacher(model)
    return model, agent


def load_teacher(teacher: BaseAlgorithm | str | os.PathLike[str], device: th.device | str = "auto") -> BaseAlgorithm:
    """
    A teacher from a loaded model, a saved SB3 zip or an RL-Zoo run folder, checked.

    The algorithm is read from the zip itself (its policy class), so any saved agent works as it is:
    RL-Zoo's published agents, saved by older SB3 with ``gym``, included. A folder is read as RL-Zoo
    writes a run (``logs/ppo/Acrobot-v1_1``: ``Acrobot-v1.zip`` and ``Acrobot-v1/config.yml``).

    :param teacher: the model, the path of its zip, or a run folder
    :param device: where a loaded teacher lives
    :return: the model
    """
    return open_teacher(teacher, device)[0]


def teacher_env(
    model: BaseAlgorithm, agent: SavedAgent | None, env: VecEnv | gym.Env | str | None, seed: int | None = None
) -> VecEnv:
    """
    The environment as the teacher's policy sees it, with the teacher's normalisation, checked early.

    - ``env=None``: the teacher's RL-Zoo environment (:meth:`SavedAgent.make_env`), as ``rl_zoo3.enjoy`` builds it;
    - an environment without ``VecNormalize`` for a teacher trained under it: the teacher's statistics
      (saved beside its zip, or held by a model in memory) wrap it, frozen; where they are missing, an error;
    - spaces that differ get an error naming what differs (float32-max bounds and infinities are alike).

    :param model: the teacher
    :param agent: its files, when it was loaded from disk
    :param env: the environment, a gym id, or ``None``
    :param seed: seed of an environment made here
    :return: the environment to collect in
    """
    if env is None:
        if agent is None:
            raise ValueError("env=None needs a teacher saved in an RL-Zoo run folder: pass env for a model")
        venv = agent.make_env(seed=seed)
    else:
        venv = as_vec_env(env, seed=seed)
        if unwrap_vec_normalize(venv) is None:
            venv = _with_teacher_statistics(model, agent, venv)
    policy = model.policy
    difference = spaces_mismatch(policy, venv)
    if difference is not None:
        raise ValueError(
            f"the environment differs from the teacher in its {difference} (environment {venv.observation_space} "
            f"-> {venv.action_space}, teacher {policy.observation_space} -> {policy.action_space}); make it as "
            f"the teacher's was made (same id, wrappers, frame stack)"
        )
    return venv


def teacher_normalization(model: BaseAlgorithm, agent: SavedAgent | None) -> dict[str, Any] | None:
    """
    The ``VecNormalize`` observation statistics a teacher acts under, or ``None`` when it was not normalised.

    :param model: the teacher (a model in memory may hold its ``VecNormalize`` env)
    :param agent: its files: RL-Zoo's ``vecnormalize.pkl`` beside the zip
    :return: the statistics, as :func:`~sb3_distill.normalization.obs_normalization_of` records them
    """
    if agent is not None and agent.vecnormalize_path is not None:
        return obs_normalization_of(read_vec_normalize(agent.vecnormalize_path))
    if agent is not None and agent.normalized:
        raise FileNotFoundError(
            f"the teacher {str(agent.model_path)!r} was trained under VecNormalize (its config.yml says "
            f"normalize), but no vecnormalize.pkl sits beside it: its statistics are needed"
        )
    return obs_normalization_of(model.get_vec_normalize_env())


def _with_teacher_statistics(model: BaseAlgorithm, agent: SavedAgent | None, venv: VecEnv) -> VecEnv:
    """``venv`` wrapped in the teacher's ``VecNormalize`` statistics, frozen, when it was trained under them."""
    stats = teacher_normalization(model, agent)
    return venv if stats is None else frozen_vec_normalize(venv, stats)
