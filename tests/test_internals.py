"""The SB3 and RL-Zoo behaviours this package relies on through private names (see ``sb3_distill/internals.py``)."""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback

from sb3_distill.internals import action_distribution, n_updates
from sb3_distill.zoo import zoo_experiment


def test_n_updates_counts_each_train_call():
    ppo = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=2, seed=0).learn(128)
    assert n_updates(ppo) == 2 * 2  # PPO counts epochs: 2 rollouts x 2 epochs
    a2c = A2C("MlpPolicy", "CartPole-v1", n_steps=8, seed=0).learn(64)
    assert n_updates(a2c) == 8
    dqn = DQN("MlpPolicy", "CartPole-v1", learning_starts=32, train_freq=4, gradient_steps=2, seed=0).learn(64)
    assert n_updates(dqn) > 0
    assert n_updates(dqn) % 2 == 0


def test_rollout_buffer_reset_allocates_new_arrays():
    """The real-time callback keeps a view of each rollout's observations until it distils: reset() must not
    overwrite them in place."""
    views = []

    class KeepViews(BaseCallback):
        def _on_rollout_end(self) -> None:
            buffer = self.model.rollout_buffer
            views.append((buffer.observations, buffer.observations.copy()))

        def _on_step(self) -> bool:
            return True

    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0).learn(96, callback=KeepViews())
    assert len(views) == 3
    for view, copy in views:
        np.testing.assert_array_equal(view, copy)
    assert views[0][0] is not views[1][0]


def test_progress_remaining_is_what_sb3_computes():
    seen = []

    class Progress(BaseCallback):
        def _on_rollout_start(self) -> None:
            total = self.locals.get("total_timesteps", self.model._total_timesteps)
            seen.append((self.model._current_progress_remaining, 1.0 - self.model.num_timesteps / total))

        def _on_step(self) -> bool:
            return True

    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0).learn(128, callback=Progress())
    for sb3, ours in seen[1:]:
        assert sb3 == ours


def test_action_distribution_of_a_gaussian_policy_is_a_normal():
    policy = PPO("MlpPolicy", "Pendulum-v1", seed=0).policy
    latent = policy.mlp_extractor.forward_actor(th.zeros(5, 3))
    normal = action_distribution(policy, latent).distribution
    assert isinstance(normal, th.distributions.Normal)
    assert normal.mean.shape == (5, 1)


def test_rl_zoo_hyperparameter_preprocessing_gives_kwargs_wrappers_and_callbacks():
    experiment = zoo_experiment("ppo", "CartPole-v1", n_envs=1)
    experiment.env.close()
    assert experiment.model_kwargs["policy"] == "MlpPolicy"
    assert len(experiment.callbacks) == 1
