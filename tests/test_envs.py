"""The environments the hyperparameter files use, as ``sb3_distill.envs`` registers them."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill.envs import MINATAR_MAX_EPISODE_STEPS, register, require_env

pytest.importorskip("minatar")


class StaysAtTheSurface:
    """A policy that never acts (action 0): in MinAtar Seaquest the submarine then never dives and never dies."""

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        return np.zeros(len(observation), dtype=np.int64), None


def test_minatar_games_have_an_episode_cap():
    register()
    minatar_ids = [env_id for env_id in gym.registry if env_id.startswith("MinAtar/")]
    assert len(minatar_ids) >= 5
    for env_id in minatar_ids:
        assert gym.registry[env_id].max_episode_steps == MINATAR_MAX_EPISODE_STEPS, env_id


def test_evaluating_a_policy_that_never_dives_in_seaquest_ends():
    """Without the cap this evaluation never returns (50,000 steps of action 0 end no Seaquest episode)."""
    require_env("MinAtar/Seaquest-v1")
    env = make_vec_env("MinAtar/Seaquest-v1", n_envs=1, seed=0)  # Monitor over TimeLimit, as RL-Zoo builds it
    returns, lengths = evaluate_policy(StaysAtTheSurface(), env, n_eval_episodes=1, return_episode_rewards=True)
    assert lengths == [MINATAR_MAX_EPISODE_STEPS]
    assert returns == [0.0]


def test_a_lifted_cap_stays_lifted():
    """``register()`` runs again wherever an environment is required: it must not cap again what the user lifted."""
    spec = gym.registry["MinAtar/Breakout-v1"]
    try:
        spec.max_episode_steps = None
        require_env("MinAtar/Breakout-v1")  # calls register()
        assert spec.max_episode_steps is None
    finally:
        spec.max_episode_steps = MINATAR_MAX_EPISODE_STEPS
