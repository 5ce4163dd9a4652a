"""Simulator-free distillation: the student learns from generated observations only."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger

from sb3_distill.datafree import ConditionalGenerator, distill_datafree, distinct_exemplars, observation_bounds
from tests.conftest import cartpole_return, greedy_agreement, make_teacher

#: CartPole's position and angle bounds, and generous bounds for its two unbounded velocities.
BOUNDS = ([-2.4, -3.0, -0.21, -3.5], [2.4, 3.0, 0.21, 3.5])


@pytest.fixture
def teacher(published_ppo):
    return published_ppo


class Recorder(Logger):
    """An SB3 logger that keeps every dumped value (no output)."""

    def __init__(self) -> None:
        super().__init__(folder=None, output_formats=[])
        self.dumps: list[dict] = []

    def dump(self, step: int = 0) -> None:
        self.dumps.append(dict(self.name_to_value))
        super().dump(step)


def test_student_learns_without_any_environment(teacher, monkeypatch):
    """Measured (published PPO teacher, seeds 0-2, 1000 iterations, [8] student): return 500 / 500 / 500, agreement
    on the teacher's states 0.79 / 0.76 / 0.79."""
    logger = Recorder()

    def no_env(*args, **kwargs):
        raise AssertionError("simulator-free distillation created an environment")

    with monkeypatch.context() as patch:
        patch.setattr(gym, "make", no_env)
        patch.setattr(gym.envs.registration, "make", no_env)
        students = [
            distill_datafree(
                teacher,
                "MlpPolicy",
                1000,
                student_kwargs={"net_arch": [8]},
                obs_bounds=BOUNDS,
                seed=seed,
                logger=logger,
            )
            for seed in (0, 1, 2)
        ]
    # Real states only now, to check: a random policy returns about 20 on CartPole.
    returns = [cartpole_return(s) for s in students]
    assert np.median(returns) >= 400, returns
    agreements = [greedy_agreement(teacher, student) for student in students]
    assert np.median(agreements) >= 0.6, agreements
    last = logger.dumps[-1]
    # Coverage: the memory holds exemplars of every action, in balance.
    counts = [last["datafree/exemplars_0"], last["datafree/exemplars_1"]]
    assert min(counts) > 0.3 * sum(counts)
    for key in ("datafree/divergence", "datafree/coverage_loss", "datafree/diversity", "distill/agreement"):
        assert key in last


@pytest.mark.slow  # 40 s: 3000 iterations; benchmarks/datafree.py measures it over more seeds
def test_reinitialisation_finds_more_distinct_exemplars(teacher):
    """Re-initialising the generator every 50 iterations collects more distinct exemplars than one generator,
    which settles on a prototype per action. Measured on the published PPO CartPole agent, 500 iterations, seeds
    0-2: 2-3 distinct exemplars per action with re-initialisation, 1-2 without (15 vs 8 in all)."""
    distinct: dict = {50: 0, None: 0}
    for seed in (0, 1, 2):
        for reinit_every in (50, None):
            logger = Recorder()
            distill_datafree(
                teacher,
                "MlpPolicy",
                500,
                student_kwargs={"net_arch": [8]},
                obs_bounds=BOUNDS,
                reinit_every=reinit_every,
                seed=seed,
                logger=logger,
            )
            last = logger.dumps[-1]
            distinct[reinit_every] += last["datafree/distinct_0"] + last["datafree/distinct_1"]
    assert distinct[50] >= 1.5 * distinct[None], distinct


def test_eval_env_only_reports(teacher):
    logger = Recorder()
    distill_datafree(
        teacher,
        "MlpPolicy",
        200,
        obs_bounds=BOUNDS,
        seed=0,
        logger=logger,
        eval_env=make_vec_env("CartPole-v1", seed=3),
        eval_freq=100,
        n_eval_episodes=2,
        log_interval=100,
    )
    assert "eval/student_return" in logger.dumps[-1]
    assert 0 <= logger.dumps[-1]["eval/agreement"] <= 1


def test_generator_fits_the_space():
    image = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    low, high = observation_bounds(image)
    generator = ConditionalGenerator(image, low, high, n_actions=6, latent_dim=8, hidden=16)
    frames = generator(th.randn(3, 8), th.tensor([0, 1, 5])).detach()
    assert frames.shape == (3, 4, 84, 84)
    assert float(frames.min()) >= 0
    assert float(frames.max()) <= 255
    binary = spaces.Box(0, 1, (10, 10, 4), np.bool_)
    low, high = observation_bounds(binary)
    bits = ConditionalGenerator(binary, low, high, n_actions=3, latent_dim=8, hidden=16)(
        th.randn(2, 8), th.tensor([0, 2])
    )
    assert set(bits.unique().tolist()) <= {0.0, 1.0}


def test_distinct_exemplars_counts_separate_points():
    low, high = np.zeros(2), np.ones(2)
    same = np.full((50, 2), 0.5)
    spread = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.51, 0.5], [0.5, 0.5]])
    assert distinct_exemplars(same, low, high) == 1
    assert distinct_exemplars(spread, low, high) == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"obs_bounds": None}, ValueError, r"dimensions \[1, 3\] .* are unbounded: pass obs_bounds=\(low, high\)"),
        ({"n_iterations": 0}, ValueError, r"n_iterations must be > 0"),
        ({"generator_learning_rate": -1.0}, ValueError, r"generator_learning_rate must be > 0"),
        ({"learning_rate": 0.0}, ValueError, r"learning_rate must be > 0"),
        ({"obs_bounds": ([0, 0], [1, 1])}, ValueError, r"obs_bounds must be \(low, high\), scalars or arrays of shape"),
        ({"student_kwargs": {"features_dim": 3}}, TypeError, r"cannot build student"),
    ],
)
def test_bad_input(teacher, kwargs, error, message):
    options = {"teacher": teacher, "student": "MlpPolicy", "n_iterations": 10, "obs_bounds": BOUNDS, **kwargs}
    with pytest.raises(error, match=message):
        distill_datafree(**options)


def test_continuous_teachers_are_refused():
    from stable_baselines3 import SAC

    with pytest.raises(TypeError, match="teachers of discrete actions"):
        distill_datafree(SAC("MlpPolicy", "Pendulum-v1"), "MlpPolicy", 10)


@pytest.mark.parametrize("algo", ["a2c", "dqn"])
def test_other_teachers(algo):
    overrides = {"learning_starts": 200, "train_freq": 4, "gradient_steps": 1} if algo == "dqn" else {}
    teacher = make_teacher(algo, seed=0, **overrides)
    teacher.learn(2_000)
    logger = Recorder()
    if algo == "dqn":  # supported, with the measured caveat said where it starts
        with pytest.warns(UserWarning, match="Q-value teacher .* not reliable"):
            student = distill_datafree(
                teacher, "MlpPolicy", 100, obs_bounds=BOUNDS, seed=0, logger=logger, log_interval=50
            )
    else:
        student = distill_datafree(teacher, "MlpPolicy", 100, obs_bounds=BOUNDS, seed=0, logger=logger, log_interval=50)
    assert student.observation_space == teacher.observation_space
    assert np.isfinite(logger.dumps[-1]["distill/loss"])


def test_cnn_students_on_binary_and_image_observations():
    """MinAtar's 10x10x4 bool frames with the MinAtar CNN student; Atari's 4x84x84 uint8 frames with SmallCNN."""
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from sb3_distill.envs import register
    from sb3_distill.students import MinAtarCNN, SmallCNN

    register()  # ALE and MinAtar
    minatar_teacher = PPO("MlpPolicy", make_vec_env("MinAtar/Breakout-v1", n_envs=2, seed=0), n_steps=64, seed=0)
    minatar_teacher.learn(128)
    student = distill_datafree(
        minatar_teacher,
        "MlpPolicy",
        20,
        student_kwargs={"features_extractor_class": MinAtarCNN, "net_arch": []},
        batch_size=48,
        seed=0,
    )
    assert isinstance(student.features_extractor, MinAtarCNN)

    pong = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0), n_stack=4)
    atari_teacher = DQN("CnnPolicy", pong, buffer_size=100, learning_starts=10**6, seed=0)  # channel-first (4, 84, 84)
    student = distill_datafree(
        atari_teacher,
        "CnnPolicy",
        2,
        student_kwargs={"features_extractor_class": SmallCNN, "net_arch": []},
        batch_size=12,
        seed=0,
    )
    assert student.observation_space.shape == (4, 84, 84)


def test_a_vec_normalize_teacher_gets_normalised_observations_and_the_student_its_statistics():
    """Measured (500 iterations, [8] student): seed 1 teacher 500, student 500; seed 0 teacher 95, student 126."""
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_distill import wrap_env

    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=8, seed=1), norm_reward=False)
    model = make_teacher("ppo", seed=1)
    model.set_env(venv)
    model.learn(30_000)
    stats = venv.obs_rms
    # No obs_bounds: CartPole's unbounded dimensions take VecNormalize's clipping range.
    student = distill_datafree(model, "MlpPolicy", 500, student_kwargs={"net_arch": [8]}, seed=1)
    assert np.array_equal(student.obs_normalization["mean"], stats.mean)
    real = wrap_env(make_vec_env("CartPole-v1", seed=5), student)
    assert float(evaluate_policy(student, real, n_eval_episodes=10)[0]) >= 300


def test_datafree_runs_take_callbacks(teacher):
    from sb3_distill.datafree import DataFreeDistillation

    run = DataFreeDistillation(teacher, "MlpPolicy", obs_bounds=BOUNDS, seed=0)
    seen = []
    run.learn(50, callback=lambda iterations, students: seen.append(iterations) or len(seen) < 5)
    assert seen == [1, 2, 3, 4, 5]  # called after every iteration, and False stops the run
    assert run.num_timesteps == 5
