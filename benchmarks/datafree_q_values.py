"""Simulator-free distillation of a Q-value teacher: the generator against uniform samples from the same box.

RL-Zoo's published DQN CartPole agent (``tests/data/zoo-agents``), an ``[8]`` student, ``--iterations``
iterations, seeds 0-2; the student's greedy return over 10 episodes, and where the memory's observations lie
(median absolute value per dimension, against real states'). ``uniform`` replaces the generator by
uniform samples from the box, everything else equal. Results: ``benchmarks/results/datafree_q_values.json``.

    python benchmarks/datafree_q_values.py
"""

from __future__ import annotations

import argparse
import functools
import pathlib
from typing import Any

import numpy as np
import torch as th
from common import write_result
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import DataFreeDistillation
from sb3_distill.datafree import GeneratorSource

ZOO = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "zoo-agents"
BOUNDS = ([-2.4, -3.0, -0.21, -3.5], [2.4, 3.0, 0.21, 3.5])  # the README's CartPole bounds


def uniform_generate(source: GeneratorSource, iteration: int) -> dict[str, float]:
    """``GeneratorSource.generate`` with uniform samples from the box instead of a generator; the rest is equal."""
    rng = np.random.default_rng(iteration)
    obs = rng.uniform(source.low, source.high, size=(source.batch_size, *source.low.shape)).astype(np.float32)
    teacher = source.teacher
    source.memory.add(obs, teacher.targets(th.as_tensor(obs, device=teacher.device), with_values=False))
    return {"coverage_loss": 0.0, "divergence": 0.0, "diversity": 0.0}


def run(teacher: str, mode: str, seed: int, iterations: int) -> dict[str, Any]:
    distillation = DataFreeDistillation(
        str(ZOO / teacher), "MlpPolicy", student_kwargs={"net_arch": [8]}, obs_bounds=BOUNDS, seed=seed, device="cpu"
    )
    if mode == "uniform":
        distillation.source.generate = functools.partial(uniform_generate, distillation.source)  # type: ignore[method-assign]
    distillation.learn(iterations)
    student = distillation.distiller.students["student"]
    returns, _ = evaluate_policy(student, make_vec_env("CartPole-v1", seed=100 + seed), n_eval_episodes=10)
    memory = distillation.source.memory
    return {
        "teacher": teacher,
        "mode": mode,
        "seed": seed,
        "return": float(returns),  # type: ignore[arg-type]
        "memory_median_abs_obs": np.median(np.abs(memory.obs[: len(memory)]), axis=0).round(3).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="dqn/CartPole-v1_1")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args()
    th.set_num_threads(1)
    runs = [run(args.teacher, mode, seed, args.iterations) for mode in ("generator", "uniform") for seed in args.seeds]
    for row in runs:
        print(row)
    write_result("datafree_q_values", {"settings": vars(args), "bounds": BOUNDS, "runs": runs})


if __name__ == "__main__":
    main()
