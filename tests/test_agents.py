"""Published RL-Zoo agents (saved by older SB3 with gym) load, build their environment and distil as they are."""

from __future__ import annotations

import shutil
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from sb3_contrib import TRPO, RecurrentPPO
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_distill import distill, distill_datafree, load_student, load_teacher
from sb3_distill.agents import SavedAgent, read_vec_normalize
from sb3_distill.cli import main
from sb3_distill.spaces import same_space, space_mismatch
from sb3_distill.teachers import open_teacher, teacher_env
from tests.conftest import PUBLISHED

ZOO = PUBLISHED
PPO_CARTPOLE = ZOO / "ppo" / "CartPole-v1_1"
DQN_CARTPOLE = ZOO / "dqn" / "CartPole-v1_1"
PPO_MOUNTAINCAR = ZOO / "ppo" / "MountainCar-v0_1"


@pytest.fixture
def zoo_copy(tmp_path):
    """A writable copy of the published agents, laid out as RL-Zoo's ``logs`` folder."""
    shutil.copytree(ZOO, tmp_path / "logs")
    return tmp_path / "logs"


@pytest.mark.parametrize(
    ("path", "algo", "env_id"),
    [
        (PPO_CARTPOLE / "CartPole-v1.zip", PPO, "CartPole-v1"),
        (PPO_CARTPOLE, PPO, "CartPole-v1"),
        (DQN_CARTPOLE, DQN, "CartPole-v1"),
        (PPO_MOUNTAINCAR, PPO, "MountainCar-v0"),
    ],
)
def test_published_agents_load_with_gymnasium_spaces(path, algo, env_id):
    model = load_teacher(path, device="cpu")
    assert type(model) is algo
    env_space = gym.make(env_id).observation_space
    assert isinstance(model.observation_space, spaces.Box)
    assert model.observation_space == env_space  # float32-max bounds written as infinities
    assert model.policy.observation_space == env_space
    assert "gym" not in sys.modules  # the aliases are gone once loaded


def test_run_folder_gives_the_environment_as_rl_zoo_enjoy_builds_it():
    model, agent = open_teacher(PPO_MOUNTAINCAR, device="cpu")
    assert agent is not None
    assert agent.env_id == "MountainCar-v0"
    assert agent.vecnormalize_path is not None
    env = teacher_env(model, agent, None, seed=0)
    assert isinstance(env, VecNormalize)
    assert not env.training
    assert not env.norm_reward
    saved = read_vec_normalize(agent.vecnormalize_path)
    np.testing.assert_array_equal(env.obs_rms.mean, saved.obs_rms.mean)
    # The published teacher needs its statistics: with them it reaches the flag (random: -200).
    mean_return, _ = evaluate_policy(model, env, n_eval_episodes=10)
    assert mean_return > -160


@pytest.mark.parametrize("env", ["MountainCar-v0", "vec"])
def test_statistics_beside_the_zip_wrap_a_plain_environment(env):
    venv = make_vec_env("MountainCar-v0", seed=0) if env == "vec" else env
    student = distill(PPO_MOUNTAINCAR / "MountainCar-v0.zip", "MlpPolicy", venv, 256, seed=0)
    saved = read_vec_normalize(PPO_MOUNTAINCAR / "MountainCar-v0" / "vecnormalize.pkl")
    assert student.obs_normalization is not None
    np.testing.assert_array_equal(student.obs_normalization["mean"], saved.obs_rms.mean)
    np.testing.assert_array_equal(student.obs_normalization["var"], saved.obs_rms.var)


def test_a_normalised_teacher_without_its_statistics_is_an_error(zoo_copy):
    run = zoo_copy / "ppo" / "MountainCar-v0_1"
    (run / "MountainCar-v0" / "vecnormalize.pkl").unlink()
    for call in (
        lambda: distill(run / "MountainCar-v0.zip", "MlpPolicy", "MountainCar-v0", 256),
        lambda: distill(run, "MlpPolicy", None, 256),
        lambda: distill_datafree(run, "MlpPolicy", 5),
    ):
        with pytest.raises(FileNotFoundError, match="VecNormalize"):
            call()


def test_a_real_mismatch_says_what_differs():
    with pytest.raises(ValueError, match=r"shape \(6,\) instead of \(4,\)"):
        distill(PPO_CARTPOLE, "MlpPolicy", "Acrobot-v1", 256)
    with pytest.raises(ValueError, match="3 actions instead of 2"):
        distill(PPO_CARTPOLE, "MlpPolicy", _three_action_cartpole(), 256)


def _three_action_cartpole():
    env = make_vec_env("CartPole-v1")
    env.action_space = spaces.Discrete(3)
    return env


def test_space_comparison():
    inf = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    float_max = spaces.Box(np.float32(-3.4028235e38), np.float32(3.4028235e38), (3,), np.float32)
    assert inf != float_max
    assert same_space(inf, float_max)
    assert space_mismatch(inf, spaces.Box(-np.inf, np.inf, (4,), np.float32)) == "shape (4,) instead of (3,)"
    assert space_mismatch(inf, spaces.Box(-np.inf, np.inf, (3,), np.float64)) == "dtype float64 instead of float32"
    assert "low bound -1.0 instead of -inf at index (0,)" in space_mismatch(
        inf, spaces.Box(-1, np.inf, (3,), np.float32)
    )
    assert space_mismatch(spaces.Discrete(2), spaces.Discrete(3)) == "3 actions instead of 2"
    assert space_mismatch(spaces.Discrete(2), inf) == "Box instead of Discrete"


@pytest.mark.slow  # 33 s; in CI, tests/test_offline.py distils from this same zip in every collection mode
def test_an_older_gym_zip_distils_through_the_public_api_over_seeds():
    """Student-driven distillation of the published PPO agent: 3 seeds, median within 20% of its 500.

    Measured (one environment, seeds 0-5): the student sampling its actions (the default for a PPO teacher)
    returns 500 in every seed at 10k steps; at 8k, 319 / 285 / 500 / 500 / 491 / 500 (greedy: 500 in every seed).
    """
    returns = [
        evaluate_policy(
            distill(
                PPO_CARTPOLE / "CartPole-v1.zip",
                "MlpPolicy",
                make_vec_env("CartPole-v1", seed=seed),
                10_000,
                collect="student",
                student_kwargs={"net_arch": [8]},
                seed=seed,
            ),
            make_vec_env("CartPole-v1", seed=100 + seed),
            n_eval_episodes=10,
        )[0]
        for seed in range(3)
    ]
    assert np.median(returns) >= 400, returns


def test_run_folder_without_env_and_simulator_free(zoo_copy):
    student = distill(DQN_CARTPOLE, "MlpPolicy", None, 512, seed=0)
    assert student.observation_space == gym.make("CartPole-v1").observation_space
    datafree = distill_datafree(zoo_copy / "ppo" / "MountainCar-v0_1", "MlpPolicy", 5, seed=0)
    saved = read_vec_normalize(zoo_copy / "ppo" / "MountainCar-v0_1" / "MountainCar-v0" / "vecnormalize.pkl")
    np.testing.assert_array_equal(datafree.obs_normalization["mean"], saved.obs_rms.mean)


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    (tmp_path / "Pong_1").mkdir()
    with pytest.raises(FileNotFoundError, match="not an RL-Zoo run folder"):
        load_teacher(tmp_path / "Pong_1")
    assert SavedAgent.find(PPO_CARTPOLE).model_path.name == "CartPole-v1.zip"


def test_trpo_loads_as_trpo_and_recurrent_policies_are_refused(tmp_path):
    trpo = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=0)
    trpo.save(tmp_path / "trpo.zip")
    assert type(load_teacher(tmp_path / "trpo.zip")) is TRPO
    RecurrentPPO("MlpLstmPolicy", "CartPole-v1", n_steps=32, seed=0).save(tmp_path / "lstm.zip")
    with pytest.raises(TypeError, match="RecurrentPPO"):
        load_teacher(tmp_path / "lstm.zip")


def test_command_line_distils_and_compares_a_published_run(zoo_copy, tmp_path, capsys):
    output = tmp_path / "student.zip"
    argv = ["distill", "-f", str(zoo_copy), "--algo", "ppo", "--env", "MountainCar-v0", "-n", "512"]
    assert main([*argv, "--student-kwargs", "net_arch:[8]", "-o", str(output)]) == 0
    student = load_student(output)
    assert student.obs_normalization is not None
    report = tmp_path / "comparison.json"
    argv = ["compare", "-f", str(zoo_copy), "--algo", "ppo", "--env", "MountainCar-v0", "--student", str(output)]
    assert main([*argv, "-n", "3", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "normalised return" in out
    assert "1 torch thread" in out
    assert main(["distill", "-f", str(zoo_copy), "--algo", "ppo", "--env", "Acrobot-v1"]) == 2
    assert "no run of Acrobot-v1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("algo", "env_id", "n_timesteps"),
    [("a2c", "Pendulum-v1", 2_000), ("ppo", "Acrobot-v1", 4_096)],  # RL-Zoo's entries: VecNormalize (A2C: gSDE)
)
def test_runs_written_by_rl_zoo_train_are_teachers(algo, env_id, n_timesteps, tmp_path):
    """A run folder as today's ``rl_zoo3.train`` writes it, with RL-Zoo's own hyperparameters."""
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", algo, "--env", env_id, "-n", str(n_timesteps)]
    command += ["-f", str(tmp_path / "logs"), "--seed", "0", "--eval-freq", "-1"]
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    run = tmp_path / "logs" / algo / f"{env_id}_1"
    model, agent = open_teacher(run, device="cpu")
    assert type(model).__name__ == algo.upper()
    env = teacher_env(model, agent, None, seed=0)
    assert isinstance(env, VecNormalize)
    assert not env.training
    saved = read_vec_normalize(run / env_id / "vecnormalize.pkl").obs_rms.mean
    for environment in (None, env_id):  # built as rl_zoo3.enjoy builds it, or a plain id wrapped in the statistics
        student = distill(run, "MlpPolicy", environment, 256, seed=0)
        np.testing.assert_array_equal(student.obs_normalization["mean"], saved)
