"""Simulator-free distillation against offline teacher-driven distillation, at the same number of student updates.

For each environment and seed, a PPO teacher trains with ``hyperparams/ppo.yml``'s settings; its student
(the entry's architecture) is then distilled twice:

- (a) ``distill_datafree``: ``--iterations`` generator + student steps, no environment;
- (b) ``distill(collect="teacher")``: the teacher acts; one student update of ``batch_size`` every
  ``batch_size`` steps (``epochs=1``), so both students take the same number of gradient steps.

Reported: student return / teacher return (30 episodes, same seeds), the same normalised by a random
policy's return, ``(student - random) / (teacher - random)`` (the meaningful figure where returns are
negative, as on Acrobot), and greedy agreement on the teacher's trajectories.
Results: ``benchmarks/results/datafree[_quick].json``.

    python benchmarks/datafree.py --jobs 2          # CartPole, Acrobot, MinAtar Breakout and Asterix, 3 seeds
    python benchmarks/datafree.py --quick --jobs 2  # smaller budgets, 2 seeds

``--jobs`` runs (environment, seed) pairs in parallel processes, one torch thread each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch as th
from common import RandomPolicy, evaluation_env, write_result, zoo_teacher
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import distill, distill_datafree
from sb3_distill.evaluation import trajectory_agreement

#: env id -> (teacher steps full, quick), obs_bounds for unbounded dimensions
CASES: dict[str, tuple[int, int, Any]] = {
    "CartPole-v1": (100_000, 60_000, ([-2.4, -3.0, -0.21, -3.5], [2.4, 3.0, 0.21, 3.5])),
    "Acrobot-v1": (300_000, 100_000, None),
    "MinAtar/Breakout-v1": (500_000, 200_000, None),
    "MinAtar/Asterix-v1": (500_000, 200_000, None),
}
BATCH_SIZE = 256


def evaluate(policy: Any, env_id: str, episodes: int, teacher: Any) -> float:
    env = evaluation_env("ppo", env_id, teacher)
    try:
        return float(np.mean(evaluate_policy(policy, env, n_eval_episodes=episodes)[0]))
    finally:
        env.close()


def agreement(teacher: Any, student: Any, env_id: str) -> float:
    env = evaluation_env("ppo", env_id, teacher, seed=20_000)
    try:
        return trajectory_agreement(teacher, student, env, n_steps=2000)
    finally:
        env.close()


def run(env_id: str, steps: int, bounds: Any, seed: int, iterations: int, episodes: int) -> dict[str, Any]:
    teacher, options = zoo_teacher("ppo", env_id, seed)
    teacher.learn(steps)
    student, student_kwargs = options["student"], options.get("student_kwargs")
    result: dict[str, Any] = {
        "seed": seed,
        "teacher_return": evaluate(teacher, env_id, episodes, teacher),
        "random_return": evaluate(RandomPolicy(teacher.action_space, seed), env_id, episodes, teacher),
    }
    span = result["teacher_return"] - result["random_return"]

    began = time.perf_counter()
    datafree = distill_datafree(
        teacher, student, iterations, student_kwargs=student_kwargs, obs_bounds=bounds, batch_size=BATCH_SIZE, seed=seed
    )
    result["datafree"] = {"seconds": time.perf_counter() - began}
    began = time.perf_counter()
    offline_env = evaluation_env("ppo", env_id, teacher, seed=seed + 1)  # the teacher's normalisation, frozen
    offline = distill(
        teacher,
        student,
        offline_env,
        n_steps=iterations * BATCH_SIZE,
        collect="teacher",
        student_kwargs=student_kwargs,
        batch_size=BATCH_SIZE,
        epochs=1,
        train_freq=BATCH_SIZE,
        seed=seed,
    )
    result["offline_teacher_driven"] = {"seconds": time.perf_counter() - began}
    for name, policy in (("datafree", datafree), ("offline_teacher_driven", offline)):
        score = evaluate(policy, env_id, episodes, teacher)
        result[name].update(
            student_return=score,
            ratio=score / result["teacher_return"] if result["teacher_return"] > 0 else None,
            normalized=(score - result["random_return"]) / span if span > 0 else None,
            agreement=agreement(teacher, policy, env_id),
        )
    return result


def run_case(args: tuple[str, int, Any, int, int, int]) -> dict[str, Any]:
    th.set_num_threads(1)
    return run(*args)


def median_of(runs: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    medians: dict[str, float | None] = {}
    for mode in ("datafree", "offline_teacher_driven"):
        values = [run[mode][key] for run in runs if run[mode][key] is not None]
        medians[mode] = statistics.median(values) if values else None
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller budgets, 2 seeds")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--envs", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--iterations", type=int, default=None, help="student updates (default 2000, quick 1000)")
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (one torch thread each)")
    parser.add_argument("--name", default=None, help="result file stem (default datafree[_quick])")
    args = parser.parse_args()
    th.set_num_threads(1)
    seeds = list(range(args.seeds or (2 if args.quick else 3)))
    iterations = args.iterations or (1000 if args.quick else 2000)
    cases = []
    for env_id in args.envs:
        full, quick, bounds = CASES[env_id]
        cases += [
            (env_id, quick if args.quick else full, bounds, seed, iterations, args.eval_episodes) for seed in seeds
        ]
    began = time.perf_counter()
    results: dict[str, Any] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        done = list(zip(cases, pool.map(run_case, cases), strict=True))
    for (env_id, steps, bounds, *_), last in done:
        print(
            f"{env_id} seed {last['seed']}: teacher {last['teacher_return']:.2f} (random "
            f"{last['random_return']:.2f}), simulator-free student {last['datafree']['student_return']:.2f} "
            f"(agreement {last['datafree']['agreement']:.3f}), offline teacher-driven "
            f"{last['offline_teacher_driven']['student_return']:.2f} "
            f"(agreement {last['offline_teacher_driven']['agreement']:.3f})"
        )
        results.setdefault(env_id, {"teacher_steps": steps, "obs_bounds": bounds, "runs": []})["runs"].append(last)
    for result in results.values():
        result["median_ratio"] = median_of(result["runs"], "ratio")
        result["median_normalized"] = median_of(result["runs"], "normalized")
        result["median_agreement"] = median_of(result["runs"], "agreement")
    path = write_result(
        args.name or ("datafree_quick" if args.quick else "datafree"),
        {
            "benchmark": "datafree",
            "seeds": seeds,
            "student_updates": iterations,
            "batch_size": BATCH_SIZE,
            "eval_episodes": args.eval_episodes,
            "teacher_settings": "hyperparams/ppo.yml",
            "jobs": args.jobs,
            "wall_seconds": time.perf_counter() - began,
            "results": results,
        },
    )
    print(f"\nwritten {path}")
    for env_id, result in results.items():
        print(
            f"  {env_id:<22} median normalised return {result['median_normalized']}, "
            f"agreement {result['median_agreement']}"
        )


if __name__ == "__main__":
    main()
