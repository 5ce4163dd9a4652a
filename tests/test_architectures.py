from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from sb3_distill import RealTimeDistillCallback, ladder, load_student, save_student
from sb3_distill.architectures import MinAtarCNN
from sb3_distill.students import minatar_pooled_student


def minatar_breakout() -> None:
    import minatar.gym

    if "MinAtar/Breakout-v1" not in gym.registry:
        minatar.gym.register_envs()


def test_minatar_cnn_without_pooling_keeps_the_saved_layout():
    space = spaces.Box(0, 1, (10, 10, 4), dtype=bool)
    extractor = MinAtarCNN(space, channels=4, features_dim=8)
    # The layout saved students were written with: a pool=1 network has no pooling layer and the same keys.
    assert list(extractor.state_dict()) == ["cnn.0.weight", "cnn.0.bias", "linear.0.weight", "linear.0.bias"]
    assert extractor.linear[0].in_features == 8 * 8 * 4


def test_pooled_minatar_students_distil_save_and_load(tmp_path):
    minatar_breakout()
    teacher = PPO("MlpPolicy", make_vec_env("MinAtar/Breakout-v1", n_envs=2, seed=0), n_steps=128, seed=0)
    pooled = {"features_extractor_class": MinAtarCNN, "net_arch": []}
    pooled["features_extractor_kwargs"] = {"channels": 8, "features_dim": 16, "pool": 2}
    callback = RealTimeDistillCallback(student={"pooled": ("MlpPolicy", pooled)}, seed=0)
    teacher.learn(1024, callback=callback)
    student = callback.students["pooled"]
    extractor = student.features_extractor
    assert any(isinstance(layer, nn.MaxPool2d) for layer in extractor.cnn)
    # 8x8 positions after the 3x3 convolution, 4x4 after the pooling: the linear layer reads 8 * 16 inputs.
    assert extractor.linear[0].in_features == 8 * 4 * 4
    assert np.isfinite(callback.last_metrics["students"]["pooled"]["loss"])
    save_student(student, tmp_path / "pooled.zip")
    loaded = load_student(tmp_path / "pooled.zip")
    obs = th.as_tensor(np.stack([teacher.observation_space.sample() for _ in range(16)]))
    with th.no_grad():
        assert th.equal(
            loaded.get_distribution(obs).distribution.logits, student.get_distribution(obs).distribution.logits
        )


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        (0, "pool must be a positive integer"),
        (-2, "pool must be a positive integer"),
        (1.5, "pool must be a positive integer"),
        (True, "pool must be a positive integer"),
        (9, "pool=9 is larger than the convolution's 8x8 output"),
    ],
)
def test_a_bad_pool_is_refused(pool, message):
    with pytest.raises(ValueError, match=message):
        MinAtarCNN(spaces.Box(0, 1, (10, 10, 4), dtype=bool), pool=pool)


def test_the_pooled_family_builds_a_ladder():
    minatar_breakout()
    teacher = PPO("MlpPolicy", make_vec_env("MinAtar/Breakout-v1", n_envs=1, seed=0), n_steps=64, seed=0)
    built = ladder(teacher, [0.25, 1.0], family=minatar_pooled_student)
    for name, (_, kwargs) in built.items():
        assert kwargs["features_extractor_kwargs"] == {
            "channels": built.widths[name],
            "features_dim": 2 * built.widths[name],
            "pool": 2,
        }
        assert built.compression[name] == pytest.approx(built.targets[name], rel=0.25)
