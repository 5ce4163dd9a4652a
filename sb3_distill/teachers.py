"""What a teacher is: an SB3 model whose policy gives distillation targets."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch as th
from gymnasium import spaces
from sb3_contrib import QRDQN
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from sb3_distill.outputs import PolicyOutputs, count_acting_parameters, has_value_head, policy_outputs, score_kind

#: Teacher algorithms, by name. Their subclasses are accepted too.
SUPPORTED_ALGORITHMS: tuple[type[BaseAlgorithm], ...] = (PPO, A2C, DQN, QRDQN, SAC, TD3)
#: Teachers of continuous (Box) actions.
CONTINUOUS_ALGORITHMS: tuple[type[BaseAlgorithm], ...] = (PPO, A2C, SAC, TD3)

#: Largest batch the teacher evaluates in one forward pass (bounds memory for image observations).
TARGET_CHUNK_SIZE = 4096


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """
    Put ``module`` in eval mode for the block, then restore every submodule's own mode exactly.

    :param module: the teacher's policy
    """
    modes = [(m, m.training) for m in module.modules()]
    if not any(training for _, training in modes):
        yield
        return
    module.train(False)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class Teacher:
    """
    Reads distillation targets from an SB3 model, never changing it.

    :param model: a PPO, A2C, DQN or QR-DQN model with a ``Discrete`` action space, or a PPO, A2C, SAC or
        TD3 model with a ``Box`` action space; ``Box`` observations
    """

    def __init__(self, model: BaseAlgorithm) -> None:
        check_teacher(model)
        self.model = model
        self.policy: BasePolicy = model.policy
        #: ``"logits"`` (discrete actor-critic), ``"q_values"`` (DQN, QR-DQN: the mean of its quantiles),
        #: ``"gaussian"`` (continuous actor-critic) or ``"actions"`` (SAC, TD3)
        self.kind = score_kind(self.policy)
        #: whether targets include state values
        self.has_values = has_value_head(self.policy)
        #: parameters on the teacher's acting path
        self.acting_parameters = count_acting_parameters(self.policy)

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
        """Where the teacher's policy lives."""
        return self.policy.device

    def targets(self, obs: th.Tensor, with_values: bool = True) -> PolicyOutputs:
        """
        The teacher's action scores (and values) for a batch, without gradients, in eval mode.

        :param obs: observation batch on the teacher's device, as stored in SB3's buffers
        :param with_values: also compute state values (actor-critic teachers only)
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
        scores = th.cat([chunk.scores for chunk in chunks])
        values = th.cat([chunk.values for chunk in chunks if chunk.values is not None]) if with_values else None
        return PolicyOutputs(scores, values)


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
    "stable_baselines3.common.policies": PPO,  # PPO and A2C: the same policies; A2C is told apart below
    "stable_baselines3.ppo.policies": PPO,
    "stable_baselines3.a2c.policies": A2C,
    "stable_baselines3.dqn.policies": DQN,
    "sb3_contrib.qrdqn.policies": QRDQN,
    "stable_baselines3.sac.policies": SAC,
    "stable_baselines3.td3.policies": TD3,
}


def load_teacher(teacher: BaseAlgorithm | str | os.PathLike[str], device: th.device | str = "auto") -> BaseAlgorithm:
    """
    A teacher from a loaded model or a saved SB3 zip (PPO, A2C, DQN, QR-DQN, SAC, TD3), checked.

    The algorithm is read from the zip itself (its policy class), so any saved agent works as it is,
    an RL-Zoo model included.

    :param teacher: the model, or the path of its zip
    :param device: where a loaded teacher lives
    :return: the model
    """
    if isinstance(teacher, BaseAlgorithm):
        check_teacher(teacher)
        return teacher
    if not isinstance(teacher, str | os.PathLike):
        raise TypeError(f"teacher must be an SB3 model or the path of a saved one, got {type(teacher).__name__}")
    path = os.fspath(teacher)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"teacher file {path!r} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
        module = data["policy_class"]["__module__"]
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"teacher file {path!r} is not a model saved by Stable-Baselines3 ({error})") from error
    if module not in _FAMILIES:
        names = ", ".join(cls.__name__ for cls in SUPPORTED_ALGORITHMS)
        raise TypeError(f"teacher file {path!r} holds a policy from {module}: supported teachers are {names}")
    algorithm = _FAMILIES[module]
    if algorithm is PPO and "clip_range" not in data:
        algorithm = A2C
    model = algorithm.load(path, device=device)
    check_teacher(model)
    return model
