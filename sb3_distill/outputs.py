"""What a policy outputs for distillation, for teachers and students alike.

Every supported policy maps a batch of observations to *action scores*, one per discrete action
(an actor-critic's logits, a Q-network's Q-values, the mean of a QR-DQN's quantiles, a wrapped
module's raw outputs), and
actor-critic policies also to a state value. Teachers and students share this code, so a student
is read exactly the way a teacher is.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.qrdqn.policies import QRDQNPolicy, QuantileNetwork
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from sb3_distill.internals import action_distribution


class ScoreKind(str, Enum):
    """What a policy's action scores are: the kind picks the loss and the temperature (:mod:`~sb3_distill.losses`)."""

    #: an actor-critic's logits (discrete actions)
    LOGITS = "logits"
    #: a Q-network's Q-values (QR-DQN: the mean of its quantiles)
    Q_VALUES = "q_values"
    #: a Gaussian policy's mean, with its ``log_std`` (continuous actor-critics)
    GAUSSIAN = "gaussian"
    #: a deterministic actor's action in [-1, 1] (TD3; SAC with gSDE)
    ACTIONS = "actions"
    #: SAC's Gaussian before its tanh: the mean, with its ``log_std`` (the action is ``tanh(mean)``)
    SQUASHED_GAUSSIAN = "squashed_gaussian"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)


LOGITS, Q_VALUES, GAUSSIAN, ACTIONS = ScoreKind.LOGITS, ScoreKind.Q_VALUES, ScoreKind.GAUSSIAN, ScoreKind.ACTIONS
SQUASHED_GAUSSIAN = ScoreKind.SQUASHED_GAUSSIAN
#: Kinds of continuous actions.
CONTINUOUS_KINDS = (GAUSSIAN, ACTIONS, SQUASHED_GAUSSIAN)

#: Policies whose action scores are Q-values (QR-DQN's are the means of its quantiles).
Q_POLICIES = (DQNPolicy, QNetwork, QRDQNPolicy, QuantileNetwork)


class PolicyOutputs(NamedTuple):
    """
    What a policy outputs for a batch.

    ``scores``: ``(batch, n_actions)`` logits or Q-values for discrete actions; for continuous ones the
    Gaussian's mean (PPO, A2C; ``log_std`` beside it) or the deterministic action in [-1, 1] (SAC, TD3),
    ``(batch, action_dim)``. ``values``: ``(batch,)`` state values of actor-critics.
    """

    scores: th.Tensor
    values: th.Tensor | None
    log_std: th.Tensor | None = None


def score_kind(policy: nn.Module) -> ScoreKind:
    """
    What a policy's action scores are.

    :param policy: an SB3 policy or a wrapped module student
    :return: ``"q_values"`` for Q-networks, ``"gaussian"`` for continuous actor-critics, ``"actions"``
        for SAC and TD3, ``"logits"`` otherwise
    """
    if isinstance(policy, Q_POLICIES):
        return Q_VALUES
    if isinstance(policy, SACPolicy) and not policy.actor.use_sde:
        return SQUASHED_GAUSSIAN
    if isinstance(policy, SACPolicy | TD3Policy):
        return ACTIONS
    if isinstance(policy, ActorCriticPolicy) and isinstance(policy.action_space, spaces.Box):
        return GAUSSIAN
    return LOGITS


def has_value_head(policy: nn.Module) -> bool:
    """:return: whether the policy has a value head of its own (an actor-critic), one a student can learn with."""
    return isinstance(policy, ActorCriticPolicy)


def shares_weights(policy: ActorCriticPolicy) -> bool:
    """:return: whether an actor-critic's actor and critic share a features extractor with weights (a CNN)"""
    return policy.share_features_extractor and any(True for _ in policy.features_extractor.parameters())


def has_critic_extractor(policy: nn.Module) -> bool:
    """:return: whether an actor-critic's critic has a features extractor with weights of its own (a CNN)"""
    return (
        isinstance(policy, ActorCriticPolicy)
        and not policy.share_features_extractor
        and any(True for _ in policy.vf_features_extractor.parameters())
    )


def wants_critic_extractor(teacher_policy: nn.Module | None, student: nn.Module) -> bool:
    """
    Whether a student built with default settings should get a critic features extractor of its own.

    A Q-value teacher's (DQN, QR-DQN) actor-critic student whose actor and critic would share a CNN: its critic
    learns the teacher's ``max_a Q`` on a CNN of its own while the actor distils, so that PPO fine-tuning starts
    with a critic that fits and whose value loss never moves the actor's features. Measured on three MinAtar
    Breakout DQN teachers (``benchmarks/finetune.py``, config ``q_critic_own``, 5 seeds each): 15 of 15 at the
    teacher's return after ``to_ppo``, ahead of a fresh critic (a copy of the actor's CNN, 14 of 15) in 12 of 15
    seeds by a median 0.05 of the teacher's return. An MLP's critic layers are its own already.

    :param teacher_policy: the teacher's policy, if known
    :param student: the student as built with the settings given
    :return: whether to rebuild it with ``share_features_extractor=False``
    """
    return isinstance(teacher_policy, Q_POLICIES) and isinstance(student, ActorCriticPolicy) and shares_weights(student)


def gives_values(policy: nn.Module) -> bool:
    """
    :return: whether ``policy_outputs`` gives state values for this policy: an actor-critic's value head, or a
        Q-value policy's ``max_a Q(s, a)`` (the value of its greedy policy)
    """
    return has_value_head(policy) or isinstance(policy, Q_POLICIES)


def is_supported_policy(policy: nn.Module) -> bool:
    """:return: whether ``policy_outputs`` can read this policy."""
    # ModuleStudent defines ``action_scores``; imported lazily to keep this module dependency-free.
    return isinstance(policy, (ActorCriticPolicy, SACPolicy, TD3Policy, *Q_POLICIES)) or hasattr(
        policy, "action_scores"
    )


def q_values_of(policy: nn.Module, obs: th.Tensor) -> th.Tensor:
    """:return: a DQN or QR-DQN policy's (or network's) Q-values, ``(batch, n_actions)``: QR-DQN's quantiles' mean"""
    if isinstance(policy, DQNPolicy):
        return policy.q_net(obs)
    if isinstance(policy, QNetwork):
        return policy(obs)
    assert isinstance(policy, QRDQNPolicy | QuantileNetwork)
    quantile_net = policy.quantile_net if isinstance(policy, QRDQNPolicy) else policy
    return quantile_net(obs).mean(dim=1)  # (batch, n_quantiles, n_actions) -> Q-values


def policy_outputs(
    policy: BasePolicy, obs: th.Tensor, with_values: bool = True, detach_shared_features: bool = False
) -> PolicyOutputs:
    """
    Action scores (and values) of a policy for a batch of raw observations.

    Observations are what SB3 stores in its buffers: the policy applies its own ``preprocess_obs``
    (uint8 scaling, flattening). One pass through the shared features extractor serves both heads.

    :param policy: an ``ActorCriticPolicy``, a DQN or QR-DQN policy (or its online network), or a wrapped module student
    :param obs: observation batch on the policy's device
    :param with_values: also compute state values: an actor-critic's value head, a Q-value policy's
        ``max_a Q(s, a)``
    :param detach_shared_features: an actor-critic whose critic shares the actor's features extractor computes
        its values from the features detached, so that a value loss does not move the features the actor acts on
    :return: scores and values (``None`` where the policy gives none or none was asked for)
    """
    if isinstance(policy, ActorCriticPolicy):
        pi_features = BasePolicy.extract_features(policy, obs, policy.pi_features_extractor)
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        log_std = None
        if isinstance(policy.action_space, spaces.Box):  # Gaussian (gSDE included): its mean and log std
            normal = action_distribution(policy, latent_pi).distribution
            assert isinstance(normal, th.distributions.Normal)
            logits, log_std = normal.mean, normal.stddev.log()
        else:
            logits = policy.action_net(latent_pi)
        if not with_values:
            return PolicyOutputs(logits, None, log_std)
        if policy.share_features_extractor:
            vf_features = pi_features.detach() if detach_shared_features else pi_features
        else:
            vf_features = BasePolicy.extract_features(policy, obs, policy.vf_features_extractor)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
        return PolicyOutputs(logits, policy.value_net(latent_vf).flatten(), log_std)
    if isinstance(policy, SACPolicy):
        if policy.actor.use_sde:  # gSDE's noise depends on the features: distil the action
            return PolicyOutputs(policy.actor(obs, deterministic=True), None)
        mean, log_std, _ = policy.actor.get_action_dist_params(obs)  # before the tanh: KL stays exact through it
        return PolicyOutputs(mean, None, log_std)
    if isinstance(policy, TD3Policy):
        return PolicyOutputs(policy.actor(obs), None)
    if isinstance(policy, Q_POLICIES):
        q_values = q_values_of(policy, obs)
        return PolicyOutputs(q_values, q_values.max(dim=1).values if with_values else None)
    action_scores = getattr(policy, "action_scores", None)  # ModuleStudent
    if callable(action_scores):
        return PolicyOutputs(action_scores(obs), None)
    raise TypeError(f"cannot read action scores from {type(policy).__name__}")


def scaled_actions(policy: nn.Module, scores: th.Tensor) -> th.Tensor:
    """
    A continuous policy's greedy actions from its scores, in SB3's scaled units (the bounds mapped to [-1, 1]).

    SAC and TD3 act in these units (``tanh`` of SAC's Gaussian mean; TD3's actor output); a PPO/A2C Gaussian's
    mean is in the environment's units and is mapped as ``policy.scale_action`` maps actions (left as it is
    where a bound is infinite). Teachers and students of different families are compared in these units, and
    every action error is relative to the action range.

    :param policy: the policy the scores come from
    :param scores: :func:`policy_outputs`' scores
    :return: actions of the same shape
    """
    kind = score_kind(policy)
    if kind == SQUASHED_GAUSSIAN:
        return th.tanh(scores)
    space = getattr(policy, "action_space", None)
    if kind == GAUSSIAN and isinstance(space, spaces.Box) and np.all(np.isfinite(space.low) & np.isfinite(space.high)):
        low = th.as_tensor(space.low, dtype=scores.dtype, device=scores.device)
        high = th.as_tensor(space.high, dtype=scores.dtype, device=scores.device)
        return 2.0 * (scores - low) / (high - low) - 1.0
    return scores


def acting_modules(policy: nn.Module) -> list[nn.Module]:
    """
    The modules a policy uses to act (the actor path of an actor-critic, the online network of DQN or QR-DQN).

    :param policy: an SB3 policy or a wrapped module student
    :return: modules whose parameters count towards the policy's acting size
    """
    if isinstance(policy, ActorCriticPolicy):
        actor = getattr(policy.mlp_extractor, "policy_net", policy.mlp_extractor)
        return [policy.pi_features_extractor, actor, policy.action_net]
    if isinstance(policy, DQNPolicy):
        return [policy.q_net]
    if isinstance(policy, QRDQNPolicy):
        return [policy.quantile_net]
    if isinstance(policy, SACPolicy | TD3Policy):
        return [policy.actor]
    return [policy]


def count_acting_parameters(policy: nn.Module) -> int:
    """
    Number of parameters on a policy's acting path, each shared tensor counted once.

    :param policy: an SB3 policy or a wrapped module student
    :return: parameter count
    """
    seen: dict[int, int] = {}
    for module in acting_modules(policy):
        for param in module.parameters():
            seen[id(param)] = param.numel()
    if isinstance(policy, ActorCriticPolicy) and isinstance(policy.action_space, spaces.Box):
        seen[id(policy.log_std)] = policy.log_std.numel()  # the Gaussian's (state-independent) log std
    return sum(seen.values())


def inherited_student_kwargs(teacher_policy: nn.Module | None, student_class: type) -> dict[str, object]:
    """
    The settings a student of ``student_class`` takes from its teacher unless told otherwise.

    A QR-DQN student gets its teacher's number of quantiles (not sb3-contrib's default of 200).

    :param teacher_policy: the teacher's policy, if known
    :param student_class: the student's policy class
    :return: ``policy_kwargs`` defaults
    """
    if isinstance(teacher_policy, QRDQNPolicy) and issubclass(student_class, QRDQNPolicy):
        return {"n_quantiles": teacher_policy.n_quantiles}
    return {}
