"""Shared helpers: small real SB3 teachers on real environments."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch as th
from sb3_contrib import QRDQN
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import BasePolicy

from sb3_distill import RealTimeDistillCallback, load_teacher
from sb3_distill.evaluation import trajectory_agreement
from sb3_distill.losses import kl_loss
from sb3_distill.outputs import policy_outputs
from sb3_distill.zoo import teacher_settings

# One thread per test process: tests run in parallel (pytest-xdist) and tiny networks gain nothing from more.
# The scripts and CLIs that tests start as subprocesses inherit it through OMP_NUM_THREADS.
th.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"


def _cartpole(algo: str, algo_class: type[BaseAlgorithm], **test_overrides) -> tuple[type[BaseAlgorithm], int, dict]:
    n_envs, kwargs = teacher_settings(algo, "CartPole-v1")  # hyperparams/ALGO.yml, as RL-Zoo reads it
    del kwargs["policy"]
    return algo_class, n_envs, {**kwargs, **test_overrides}


#: CartPole settings per algorithm: this package's hyperparameter files (RL-Zoo's tuned ones), with smaller
#: Q-networks and replay buffers for DQN and QR-DQN, which the tests' budgets allow.
CARTPOLE = {
    "ppo": _cartpole("ppo", PPO),
    "a2c": _cartpole("a2c", A2C),
    "dqn": _cartpole("dqn", DQN, buffer_size=50_000, policy_kwargs={"net_arch": [64, 64]}),
    "qrdqn": _cartpole("qrdqn", QRDQN, buffer_size=50_000, policy_kwargs={"net_arch": [64, 64], "n_quantiles": 10}),
}


#: RL Baselines3 Zoo's published agents (DLR-RM/rl-trained-agents, MIT), laid out as RL-Zoo writes a run folder:
#: saved by an older SB3 with gym, so teachers that this project never tuned on.
PUBLISHED = Path(__file__).parent / "data" / "zoo-agents"


@pytest.fixture(scope="session")
def published_ppo() -> BaseAlgorithm:
    """RL-Zoo's published PPO CartPole-v1 agent (return 500, a [64, 64] actor-critic)."""
    return load_teacher(PUBLISHED / "ppo" / "CartPole-v1_1", device="cpu")


@pytest.fixture(scope="session")
def published_dqn() -> BaseAlgorithm:
    """RL-Zoo's published DQN CartPole-v1 agent (return 500, a [256, 256] Q-network)."""
    return load_teacher(PUBLISHED / "dqn" / "CartPole-v1_1", device="cpu")


def make_teacher(algo: str, seed: int = 0, env_id: str = "CartPole-v1", **overrides) -> BaseAlgorithm:
    """A fresh teacher with the fast CartPole settings."""
    algo_class, n_envs, kwargs = CARTPOLE[algo]
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    return algo_class("MlpPolicy", env, seed=seed, **{**kwargs, **overrides})


def greedy_agreement(teacher: BaseAlgorithm, student: BasePolicy, n_steps: int = 1000, seed: int = 123) -> float:
    """Agreement on the teacher's own greedy CartPole trajectories."""
    return trajectory_agreement(teacher, student, make_vec_env("CartPole-v1", seed=seed), n_steps=n_steps)


def cartpole_return(policy: BasePolicy, episodes: int = 10, seed: int = 5) -> float:
    """Greedy mean return over ``episodes`` CartPole episodes, one per environment of a vectorised env (seeds
    ``seed``, ``seed + 1``, ...): the episodes run side by side, in one batched forward pass per step."""
    env = make_vec_env("CartPole-v1", n_envs=episodes, seed=seed)
    return float(evaluate_policy(policy, env, n_eval_episodes=episodes, deterministic=True)[0])


def random_observations(n: int = 256, seed: int = 0) -> np.ndarray:
    """CartPole-like observations for prediction comparisons."""
    return np.random.default_rng(seed).normal(scale=0.5, size=(n, 4)).astype(np.float32)


def policy_vector(model: BaseAlgorithm) -> th.Tensor:
    """Every parameter of a model's policy, flattened."""
    return th.cat([p.detach().flatten().cpu() for p in model.policy.parameters()])


@pytest.fixture
def tmp_file(tmp_path):
    return tmp_path / "student.zip"


class RecordingDistillCallback(RealTimeDistillCallback):
    """The real callback, keeping every distillation's metrics and a copy of the students as first built."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.history: list[dict] = []
        self.initial_students: dict = {}

    def _init_callback(self) -> None:
        super()._init_callback()
        self.initial_students = copy.deepcopy(self.students)

    def _finish_distillation(self, block: bool = True) -> dict | None:
        metrics = super()._finish_distillation(block)  # where every distillation ends, in the foreground or not
        if metrics is not None:
            self.history.append(metrics)
        return metrics


def kl_to_teacher(teacher: BaseAlgorithm, student: BasePolicy, obs: np.ndarray, temperature: float) -> float:
    """KL(teacher || student) on a batch of observations, as the distillation loss computes it."""
    obs_tensor = th.as_tensor(obs, device=teacher.device)
    with th.no_grad():
        teacher_scores = policy_outputs(teacher.policy, obs_tensor).scores
        student_scores = policy_outputs(student, obs_tensor.to(student.device)).scores
    return float(kl_loss(student_scores, teacher_scores, temperature))
