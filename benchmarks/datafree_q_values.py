"""Simulator-free distillation of a Q-value teacher: the generator against uniform samples from the same box.

Q-value teachers as RL-Zoo run folders (``--teachers algo/EnvId_N`` under ``--zoo``; default RL-Zoo's
published DQN CartPole agent in ``tests/data/zoo-agents``), an ``[8]`` student, ``--iterations`` iterations,
seeds 0-2; the student's greedy return over 10 episodes, random-normalised, and where the memory's
observations lie (median absolute value per dimension). ``uniform`` replaces the generator by uniform samples
from the box, everything else equal. CartPole takes the README's bounds; Acrobot's box is bounded already.
Results: ``benchmarks/results/datafree_q_values[_<name>].json``.

    python benchmarks/datafree_q_values.py
    python -m rl_zoo3.train --algo qrdqn --env CartPole-v1 -f zoo-q --seed 0 --eval-freq -1
    python -m rl_zoo3.train --algo dqn --env Acrobot-v1 -f zoo-q --seed 0 --eval-freq -1
    python benchmarks/datafree_q_values.py --zoo zoo-q --teachers qrdqn/CartPole-v1_1 dqn/Acrobot-v1_1 \
        --modes generator --name more
"""

from __future__ import annotations

import argparse
import functools
import pathlib
from typing import Any

import numpy as np
import torch as th
from common import RandomPolicy, write_result
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import DataFreeDistillation, load_teacher
from sb3_distill.datafree import GeneratorSource

ZOO = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "zoo-agents"
#: env id -> obs_bounds (the README's CartPole bounds; Acrobot's observation space is bounded)
BOUNDS: dict[str, Any] = {"CartPole-v1": ([-2.4, -3.0, -0.21, -3.5], [2.4, 3.0, 0.21, 3.5]), "Acrobot-v1": None}


def uniform_generate(source: GeneratorSource, iteration: int) -> dict[str, float]:
    """``GeneratorSource.generate`` with uniform samples from the box instead of a generator; the rest is equal."""
    rng = np.random.default_rng(iteration)
    obs = rng.uniform(source.low, source.high, size=(source.batch_size, *source.low.shape)).astype(np.float32)
    teacher = source.teacher
    source.memory.add(obs, teacher.targets(th.as_tensor(obs, device=teacher.device), with_values=False))
    return {"coverage_loss": 0.0, "divergence": 0.0, "diversity": 0.0}


def env_id(teacher: str) -> str:
    """:return: the environment of a run folder ``algo/EnvId_N``"""
    return teacher.split("/", 1)[1].rsplit("_", 1)[0]


def mean_return(policy: Any, env: str, seed: int, episodes: int = 10) -> float:
    returns, _ = evaluate_policy(policy, make_vec_env(env, seed=seed), n_eval_episodes=episodes)
    return float(returns)  # type: ignore[arg-type]


def run(zoo: pathlib.Path, teacher: str, mode: str, seed: int, iterations: int) -> dict[str, Any]:
    env = env_id(teacher)
    distillation = DataFreeDistillation(
        str(zoo / teacher),
        "MlpPolicy",
        student_kwargs={"net_arch": [8]},
        obs_bounds=BOUNDS[env],
        seed=seed,
        device="cpu",
    )
    if mode == "uniform":
        distillation.source.generate = functools.partial(uniform_generate, distillation.source)  # type: ignore[method-assign]
    distillation.learn(iterations)
    student = distillation.distiller.students["student"]
    memory = distillation.source.memory
    return {
        "teacher": teacher,
        "mode": mode,
        "seed": seed,
        "return": mean_return(student, env, 100 + seed),
        "memory_median_abs_obs": np.median(np.abs(memory.obs[: len(memory)]), axis=0).round(3).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", type=pathlib.Path, default=ZOO, help="the folder holding the run folders")
    parser.add_argument("--teachers", nargs="+", default=["dqn/CartPole-v1_1"], help="run folders algo/EnvId_N")
    parser.add_argument("--modes", nargs="+", default=["generator", "uniform"], choices=["generator", "uniform"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--name", default=None, help="results/datafree_q_values_<name>.json")
    args = parser.parse_args()
    th.set_num_threads(1)
    references = {}
    for teacher in args.teachers:
        env = env_id(teacher)
        random_policy = RandomPolicy(make_vec_env(env).action_space, seed=0)
        references[teacher] = {
            "teacher_return": mean_return(load_teacher(str(args.zoo / teacher), device="cpu"), env, 100),
            "random_return": mean_return(random_policy, env, 100),
        }
    runs = [
        run(args.zoo, teacher, mode, seed, args.iterations)
        for teacher in args.teachers
        for mode in args.modes
        for seed in args.seeds
    ]
    for row in runs:
        reference = references[row["teacher"]]
        span = reference["teacher_return"] - reference["random_return"]
        row["normalized"] = (row["return"] - reference["random_return"]) / span
        print(row)
    settings = {key: str(value) if key == "zoo" else value for key, value in vars(args).items() if key != "name"}
    settings["zoo"] = "tests/data/zoo-agents" if args.zoo == ZOO else "trained with the commands above"
    name = "datafree_q_values" if args.name is None else f"datafree_q_values_{args.name}"
    write_result(name, {"settings": settings, "bounds": BOUNDS, "references": references, "runs": runs})


if __name__ == "__main__":
    main()
