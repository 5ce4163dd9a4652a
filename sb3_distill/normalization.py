"""``VecNormalize`` observation statistics: what a student records, and the frozen wrapper that applies them."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

#: The attribute of a student that records the ``VecNormalize`` statistics its inputs are normalised with.
RECORD_ATTRIBUTE = "obs_normalization"


def obs_normalization(student: BasePolicy) -> dict[str, Any] | None:
    """
    :param student: a student
    :return: the ``VecNormalize`` statistics recorded beside it, ``None`` when its inputs are not normalised
    """
    return getattr(student, RECORD_ATTRIBUTE, None)


def record_obs_normalization(student: BasePolicy, stats: dict[str, Any] | None) -> None:
    """
    Record beside a student the ``VecNormalize`` statistics its inputs are normalised with.

    :param student: the student
    :param stats: :func:`~sb3_distill.normalization.obs_normalization_of`'s snapshot, or ``None``
    """
    setattr(student, RECORD_ATTRIBUTE, stats)


def obs_normalization_of(vec_normalize: VecNormalize | None) -> dict[str, Any] | None:
    """
    Snapshot of a ``VecNormalize``'s observation statistics, as a student records them.

    :param vec_normalize: the teacher's ``VecNormalize`` wrapper, if any
    :return: ``None`` when observations are not normalised
    """
    if vec_normalize is None or not vec_normalize.norm_obs:
        return None
    obs_rms = vec_normalize.obs_rms
    assert isinstance(obs_rms, RunningMeanStd), "students support Box observations, not Dict"
    return {
        "mean": np.array(obs_rms.mean, copy=True),
        "var": np.array(obs_rms.var, copy=True),
        "count": float(obs_rms.count),
        "clip_obs": float(vec_normalize.clip_obs),
        "epsilon": float(vec_normalize.epsilon),
    }


def frozen_vec_normalize(venv: VecEnv, stats: dict[str, Any]) -> VecNormalize:
    """
    ``venv`` normalised with fixed statistics: ``training=False``, rewards raw.

    :param venv: the environment, wrapped up to (not including) ``VecNormalize``
    :param stats: what :func:`obs_normalization_of` recorded
    :return: the wrapper
    """
    wrapped = VecNormalize(
        venv, training=False, norm_obs=True, norm_reward=False, clip_obs=stats["clip_obs"], epsilon=stats["epsilon"]
    )
    obs_rms = wrapped.obs_rms
    assert isinstance(obs_rms, RunningMeanStd)
    obs_rms.mean = np.array(stats["mean"], copy=True)
    obs_rms.var = np.array(stats["var"], copy=True)
    obs_rms.count = stats["count"]
    return wrapped


def wrap_env(venv: VecEnv, student: BasePolicy) -> VecEnv:
    """
    Wrap a ``VecEnv`` so that it gives the student the observations it was distilled on.

    Frame stacking, Atari preprocessing and image transposition are the environment's own
    wrappers (make the env as the teacher's was made); this adds the teacher's ``VecNormalize``
    observation statistics that the student recorded, frozen (``training=False``), rewards raw.

    :param venv: the environment, wrapped as the teacher's was up to (not including) ``VecNormalize``
    :param student: a student from :func:`load_student` or a distillation callback
    :return: ``venv`` itself if the teacher did not normalise observations, else a ``VecNormalize``
    """
    stats = obs_normalization(student)
    return venv if stats is None else frozen_vec_normalize(venv, stats)
