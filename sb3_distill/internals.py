"""The private names of SB3 and RL-Zoo this package relies on, one function each, with why no public one serves.

``tests/test_internals.py`` pins the behaviour each relies on, so that an SB3 or RL-Zoo release that
changes it fails the tests, not a user's run.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy


def n_updates(model: BaseAlgorithm) -> int:
    """
    How many times the teacher has updated (``train()`` calls for PPO/A2C, gradient steps for DQN and the likes).

    SB3 counts them in ``_n_updates`` and logs ``train/n_updates`` only until the next dump: no public counter.
    The real-time callback distils after an update, not before the first one.

    :param model: the teacher
    :return: the counter
    """
    return int(model._n_updates)


def action_distribution(policy: ActorCriticPolicy, latent_pi: th.Tensor) -> Distribution:
    """
    An actor-critic's action distribution from its actor latent (Gaussian, gSDE included).

    ``policy.get_distribution(obs)`` is public but runs the features extractor again; distillation reads
    the actor and the critic from one pass through it.

    :param policy: the actor-critic
    :param latent_pi: ``policy.mlp_extractor.forward_actor(features)``
    :return: the distribution
    """
    return policy._get_action_dist_from_latent(latent_pi)


def preprocess_zoo_hyperparams(manager: Any, hyperparams: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """
    RL-Zoo's conversion of an entry (schedules, ``policy_kwargs``, wrappers, callbacks), as ``train`` does it.

    ``ExperimentManager.setup_experiment`` is the public way, but it also builds the model (and a replay buffer
    that can take gigabytes): checking an entry needs the conversion alone.

    :param manager: an ``rl_zoo3.exp_manager.ExperimentManager``
    :param hyperparams: the entry, as ``read_hyperparameters`` returned it
    :return: ``(model kwargs, env_wrapper, callbacks, vec_env_wrapper)``
    """
    return manager._preprocess_hyperparams(hyperparams)  # type: ignore[no-any-return]
