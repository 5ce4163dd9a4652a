"""Student families with a size knob, and ladders of students at chosen compression ratios."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack

from sb3_distill import RealTimeDistillCallback, count_acting_parameters
from sb3_distill.students import (
    atari_cnn_student,
    ladder,
    minatar_cnn_student,
    mlp_student,
    student_family,
)
from tests.conftest import make_teacher


def acting_parameters(teacher, spec) -> int:
    alias, kwargs = spec
    policy = teacher.policy_aliases[alias](teacher.observation_space, teacher.action_space, lambda _: 0.0, **kwargs)
    return count_acting_parameters(policy)


def test_each_rung_is_the_nearest_width_and_reports_its_exact_ratio():
    teacher = make_teacher("ppo", seed=0)
    built = ladder(teacher, ratios=[0.017, 0.05, 0.25])
    assert list(built) == ["1.7pct", "5pct", "25pct"]
    teacher_size = count_acting_parameters(teacher.policy)
    for name, target in built.targets.items():
        width = built.widths[name]
        assert built[name] == mlp_student(width)
        assert built.compression[name] == acting_parameters(teacher, built[name]) / teacher_size
        distance = abs(math.log(built.compression[name] / target))
        for neighbour in (width - 1, width + 1):
            other = acting_parameters(teacher, mlp_student(neighbour)) / teacher_size
            assert distance <= abs(math.log(other / target))
    # CartPole's [64, 64] PPO actor (4,610 parameters): [11], [33], [164] students.
    assert [built.widths[name] for name in built] == [11, 33, 164]
    assert "1.71% of the teacher (asked 1.70%)" in built.describe()


def test_a_ladder_distils_in_one_teacher_run_with_the_ratios_it_reported():
    teacher = make_teacher("ppo", seed=0)
    built = ladder(teacher)
    distill = RealTimeDistillCallback(student=built, seed=0)
    teacher.learn(1024, callback=distill)
    assert sorted(distill.students) == sorted(built)
    logged = teacher.logger.name_to_value
    for name, compression in built.compression.items():
        assert logged[f"distill/{name}/compression"] == pytest.approx(compression)
        assert distill.distiller.compression[name] == pytest.approx(compression)


def test_families_follow_the_observation_space():
    import ale_py
    import minatar.gym

    gym.register_envs(ale_py)
    if "MinAtar/Breakout-v1" not in gym.registry:
        minatar.gym.register_envs()
    atari = PPO("CnnPolicy", VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1), 4), device="cpu")
    assert student_family(atari.policy.observation_space) is atari_cnn_student
    built = ladder(atari)
    # The Nature-CNN actor with 6 actions has 1,687,206 parameters; the Atari family's 1.7% rung is the
    # Atari YAML entries' student.
    assert built.parameters == {"1.7pct": 28_594, "5pct": 84_559, "25pct": 430_006}
    minatar = DQN(
        "MlpPolicy", make_vec_env("MinAtar/Breakout-v1"), buffer_size=100, policy_kwargs={"net_arch": [256, 256]}
    )
    assert student_family(minatar.policy.observation_space) is minatar_cnn_student
    assert ladder(minatar, ratios=[0.05]).compression["5pct"] == pytest.approx(8_555 / 169_219)
    assert student_family(make_teacher("dqn", seed=0).policy.observation_space) is mlp_student


def test_a_saved_teacher_and_a_custom_family(tmp_path):
    teacher = make_teacher("dqn", seed=0)
    teacher.save(tmp_path / "dqn.zip")
    built = ladder(tmp_path / "dqn.zip", ratios=[0.05], family=lambda width: mlp_student(width, depth=2))
    assert built["5pct"][1]["net_arch"] == [built.widths["5pct"]] * 2
    assert built.compression["5pct"] == pytest.approx(0.05, rel=0.1)


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ([], "ratios is empty"),
        ([0.0], r"in \(0, 1\], got 0.0"),
        ([1.5], r"in \(0, 1\], got 1.5"),
        ([0.05, 0.05], "given twice"),
    ],
)
def test_bad_ratios_are_refused(ratios, message):
    with pytest.raises(ValueError, match=message):
        ladder(make_teacher("ppo", seed=0), ratios=ratios)
