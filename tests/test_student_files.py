"""Student files: what rebuilds a student rebuilds the same one."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import sb3_distill.envs  # noqa: F401  (registers MinAtar)
from sb3_distill import load_student, save_student, to_ppo
from sb3_distill.architectures import MinAtarCNN
from sb3_distill.serialization import atomic_torch_save
from sb3_distill.student_files import student_payload
from sb3_distill.students import make_student


def minatar_student(share: bool):
    env = make_vec_env("MinAtar/Breakout-v1")
    kwargs = {
        "features_extractor_class": MinAtarCNN,
        "features_extractor_kwargs": {"channels": 4, "features_dim": 8},
        "net_arch": [],
        "share_features_extractor": share,
    }
    return make_student("MlpPolicy", env.observation_space, env.action_space, PPO.policy_aliases, kwargs, seed=0)


def outputs(student, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    with th.no_grad():
        return student.get_distribution(obs).distribution.logits, student.predict_values(obs)


@pytest.mark.parametrize("share", [True, False], ids=["shared", "own_critic_extractor"])
@pytest.mark.parametrize("recorded", [True, False], ids=["file", "file_without_share_flag"])
def test_an_actor_critic_comes_back_with_its_features_extractors(share, recorded, tmp_path):
    """SB3's constructor parameters leave out ``share_features_extractor``: a critic with a CNN of its own came back
    sharing one, the actor's CNN overwritten by the critic's (a distilled MinAtar student returned 0)."""
    student = minatar_student(share)
    obs = th.as_tensor(np.random.default_rng(0).random((32, 10, 10, 4)) < 0.2, dtype=th.float32)
    payload = student_payload(student)
    if not recorded:  # as files written before the flag was recorded: read from the weights
        del payload["data"]["share_features_extractor"]
    atomic_torch_save(payload, tmp_path / "student.pt")
    loaded = load_student(tmp_path / "student.pt", device="cpu")
    assert loaded.share_features_extractor == share
    for mine, theirs in zip(outputs(student, obs), outputs(loaded, obs), strict=True):
        assert th.equal(mine, theirs)
    save_student(loaded, tmp_path / "again.pt")
    model = to_ppo(loaded, make_vec_env("MinAtar/Breakout-v1"), greedy_probability=None, rollback_below=None)
    logits, values = outputs(model.policy, obs)
    assert th.equal(logits, outputs(student, obs)[0])
    assert th.equal(values, outputs(student, obs)[1])
