"""Fine-tuning a distilled student with RL: ``to_ppo`` and ``to_dqn`` turn it into an SB3 model that keeps learning.

The model is built by SB3 itself from the student's own policy class and ``policy_kwargs`` (so
``PPO.load`` reads its saves without this package), then takes the student's weights. What the
student learned is kept exactly: the model's greedy actions are the student's.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.dqn.policies import DQNPolicy

from sb3_distill.normalization import obs_normalization, wrap_env

#: Constructor arguments of a policy that the algorithm passes itself.
_SPACE_ARGUMENTS = ("observation_space", "action_space", "lr_schedule", "use_sde")


def _policy_kwargs(student: BasePolicy) -> dict[str, Any]:
    kwargs = student._get_constructor_parameters()
    return {key: value for key, value in kwargs.items() if key not in _SPACE_ARGUMENTS}


def _student_env(student: BasePolicy, env: VecEnv | gym.Env | str) -> VecEnv | gym.Env | str:
    """The environment, with the ``VecNormalize`` statistics the student recorded (frozen) when there are some."""
    if obs_normalization(student) is None:
        return env
    if not isinstance(env, VecEnv):
        raise TypeError("this student was distilled under VecNormalize: pass a VecEnv built as the teacher's was")
    return wrap_env(env, student)


def to_ppo(student: BasePolicy, env: VecEnv | gym.Env | str, **ppo_kwargs: Any) -> PPO:
    """
    A PPO model whose policy is the student, ready to ``learn`` like any PPO model.

    The value head comes with the student: distilled from an actor-critic teacher (``distill_value``,
    on by default), freshly initialised by SB3 when the teacher had none (DQN, QR-DQN) — then the first
    updates move the policy on a poor critic; a smaller ``learning_rate`` or a larger ``n_steps`` helps.

    :param student: an actor-critic student (``ActorCriticPolicy`` family)
    :param env: the environment, made as the teacher's was (a ``VecNormalize`` the student recorded is re-applied)
    :param ppo_kwargs: any ``PPO`` argument (``learning_rate``, ``n_steps``, ``seed``, ``verbose`` ...);
        ``policy_kwargs`` cannot be given: they are the student's
    :return: the PPO model
    """
    if not isinstance(student, ActorCriticPolicy):
        raise TypeError(
            f"to_ppo needs an actor-critic student (ActorCriticPolicy family), got {type(student).__name__}: "
            f"distil into 'MlpPolicy'/'CnnPolicy' of PPO (or ActorCriticPolicy) to fine-tune with PPO"
        )
    return _with_student(PPO, student, env, ppo_kwargs)


def to_dqn(student: BasePolicy, env: VecEnv | gym.Env | str, **dqn_kwargs: Any) -> DQN:
    """
    A DQN model whose online and target Q-networks are the student's, ready to ``learn``.

    Exploration defaults to a constant 5% (``exploration_initial_eps=exploration_final_eps=0.05``) rather
    than DQN's 100% start, which would throw the distilled behaviour away; pass them to change it.

    :param student: a Q-network student (``DQNPolicy`` family)
    :param env: the environment, made as the teacher's was
    :param dqn_kwargs: any ``DQN`` argument; ``policy_kwargs`` are the student's
    :return: the DQN model
    """
    if not isinstance(student, DQNPolicy):
        raise TypeError(f"to_dqn needs a Q-network student (DQNPolicy family), got {type(student).__name__}")
    dqn_kwargs = {"exploration_initial_eps": 0.05, "exploration_final_eps": 0.05, **dqn_kwargs}
    model = _with_student(DQN, student, env, dqn_kwargs)
    model.policy.q_net_target.load_state_dict(model.policy.q_net.state_dict())
    return model


def _with_student(algorithm: type[Any], student: BasePolicy, env: Any, kwargs: dict[str, Any]) -> Any:
    if "policy_kwargs" in kwargs:
        raise TypeError("policy_kwargs are the student's: build the student with the architecture you want instead")
    if getattr(student, "use_sde", False):
        kwargs = {"use_sde": True, **kwargs}
    model = algorithm(type(student), _student_env(student, env), policy_kwargs=_policy_kwargs(student), **kwargs)
    if model.policy.observation_space != student.observation_space or model.action_space != student.action_space:
        raise ValueError(
            f"the environment gives {model.policy.observation_space} -> {model.action_space}, but the student "
            f"acts on {student.observation_space} -> {student.action_space}"
        )
    model.policy.load_state_dict(student.state_dict())
    return model
