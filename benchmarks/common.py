"""What the benchmarks share: teachers from the hyperparameter files, evaluation off the clock, and result files.

Every result records the code, the packages and the machine, so that a figure can be traced and rerun.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

import torch as th
from rl_zoo3.utils import ALGOS
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_distill.evaluation import (
    RandomPolicy,  # noqa: F401  (the benchmarks import it from here)
    normalized_return,
)
from sb3_distill.ladder import Spec, minatar_cnn_student, minatar_pooled_student, mlp_student
from sb3_distill.serialization import atomic_write_bytes
from sb3_distill.zoo import distill_kwargs, hyperparams_file, load_hyperparams, zoo_experiment

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def pooled_square(width: int) -> Spec:
    """:return: :func:`~sb3_distill.ladder.minatar_pooled_student` with as many features as channels"""
    spec = minatar_pooled_student(width)
    return spec[0], {**spec[1], "features_extractor_kwargs": {"channels": width, "features_dim": width, "pool": 2}}


#: MinAtar student families the benchmarks compare by name (``plain`` is the ladder's default)
FAMILIES: dict[str, Callable[[int], Spec]] = {
    "plain": minatar_cnn_student,
    "pooled": minatar_pooled_student,
    "pooled-square": pooled_square,
    "mlp": mlp_student,
}
PACKAGES = ("sb3-distill", "stable-baselines3", "torch", "gymnasium", "numpy", "ale-py", "minatar")


def normalized_or_none(score: float, teacher: float, random: float) -> float | None:
    """:func:`sb3_distill.evaluation.normalized_return`, ``None`` (JSON ``null``) when the teacher is no better
    than random, where the ratio says nothing"""
    return normalized_return(score, teacher, random) if teacher > random else None


def median_or_none(values: list[float | None]) -> float | None:
    """The median of the values that are there (``None`` when there are none)."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return commit + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):  # a copy of the tree without git: the commit, if given
        return os.environ.get("BENCHMARK_COMMIT", "unknown")


#: The code a benchmark runs: the commit when it started (a commit made while it runs is not its code).
COMMIT_AT_START = git_commit()


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": th.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if th.cuda.is_available():
        info["gpu"] = th.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_result(name: str, data: dict[str, Any]) -> pathlib.Path:
    """Write ``results/<name>.json`` atomically, with the commit it started at, package versions and machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"commit": COMMIT_AT_START, "versions": versions(), "machine": machine(), **data}
    atomic_write_bytes((json.dumps(record, indent=2, default=repr) + "\n").encode(), path)  # schedules by repr
    return path


class Clock:
    """Wall time with the evaluations taken out (``paused`` collects their seconds)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.paused = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def evaluate(self, policy: Any, env: Any, episodes: int, seed: int | None = None) -> float:
        """
        Mean return of ``policy`` over ``episodes`` on ``env`` (deterministic actions), off the clock.

        :param seed: reseed ``env`` first, so that every policy scored with the same seed meets the same episodes
            (paired comparisons: teacher, random policy and students, a student before and after a finish);
            ``None`` goes on from where the last evaluation on ``env`` left it (curves along training)
        """
        began = time.perf_counter()
        if seed is not None:
            env.seed(seed)  # used by the reset that evaluate_policy starts with
        returns, _ = evaluate_policy(policy, env, n_eval_episodes=episodes, deterministic=True)
        self.paused += time.perf_counter() - began
        return float(returns)  # type: ignore[arg-type]


def zoo_teacher(
    algo: str, env_id: str, seed: int, overrides: dict[str, Any] | None = None, vec_env_type: str = "dummy"
) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """
    A teacher built from ``hyperparams/<algo>.yml`` as RL-Zoo would, untrained.

    :param overrides: model arguments that replace the entry's (``policy_kwargs``, ``learning_rate``...)
    :param vec_env_type: ``"dummy"`` or ``"subproc"`` (the environments stepped in subprocesses)
    :return: the teacher and the entry's distillation options (its ``RealTimeDistillCallback`` arguments) but
        ``verbose`` and ``finish_steps``: the finish needs an environment of its own and runs after training, so
        a benchmark opts into it itself (``students_vs_teacher.py --finish``)
    """
    experiment = zoo_experiment(algo, env_id, seed=seed, vec_env_type=vec_env_type)
    kwargs = {key: value for key, value in experiment.model_kwargs.items() if key != "policy"}
    kwargs.update(overrides or {})
    teacher = ALGOS[algo](experiment.model_kwargs["policy"], experiment.env, seed=seed, **kwargs)
    entry = load_hyperparams(hyperparams_file(algo))[experiment.entry]
    options = {key: value for key, value in distill_kwargs(entry).items() if key not in ("verbose", "finish_steps")}
    return teacher, options


def sync_normalization(env: VecEnv, teacher: BaseAlgorithm) -> None:
    """Give an evaluation environment the teacher's current observation statistics, frozen."""
    trained = teacher.get_vec_normalize_env()
    if isinstance(env, VecNormalize) and trained is not None:
        env.obs_rms = copy.deepcopy(trained.obs_rms)
        env.training, env.norm_reward = False, False


#: the seed of the evaluation episodes that final scores are taken on (every policy of a run on the same episodes)
EVAL_SEED = 10_000


def evaluation_env(algo: str, env_id: str, teacher: BaseAlgorithm, seed: int = EVAL_SEED, n_envs: int = 1) -> VecEnv:
    """
    Environments wrapped as the entry's, for evaluation: with the teacher's observation
    normalisation (RL-Zoo's ``normalize: true``) as it is now, frozen.

    :param n_envs: environments side by side (``evaluate_policy`` shares the episodes out among them)
    """
    env = zoo_experiment(algo, env_id, n_envs=n_envs, seed=seed).env
    sync_normalization(env, teacher)
    return env


def saved_ladder_runs(names: list[str], save_dir: str) -> Iterator[tuple[str, dict[str, Any], BaseAlgorithm]]:
    """
    The runs of ``students_vs_teacher.py`` results saved with ``--save-dir``, each with its final teacher.

    :param names: result file stems under ``benchmarks/results/``
    :param save_dir: the folder holding the runs' saved files (``<algo>_<env>_<seed>_teacher.zip``...)
    :return: for each run, its ``"<algo> <env>"`` key, its record and its teacher (loaded on the CPU)
    """
    for name in names:
        ladder_result = json.loads((RESULTS / f"{name}.json").read_text())
        for key, entry in ladder_result["results"].items():
            for run in entry["runs"]:
                if "saved" not in run:
                    raise SystemExit(f"{name}: {key} seed {run['seed']} ran without --save-dir: nothing to load")
                path = pathlib.Path(save_dir) / f"{run['saved']}_teacher.zip"
                yield key, run, ALGOS[run["algo"]].load(path, device="cpu")
