"""Saved ladders evaluated again, on more and other episodes: how much of a rung's figure is the evaluation's draw.

``students_vs_teacher.py`` scores each run's final teacher and students on ``--eval-episodes`` episodes (30 in
the long runs) of one evaluation seed. On MinAtar one policy's mean return moves by 10-25% from one such set
to another, which makes single rungs swing. For each run of the named results saved with ``--save-dir``,
this loads the final teacher and its students and scores all of them, with a random policy, on
``--episodes`` episodes of another evaluation seed (``--eval-seed``), deterministic actions, as the benchmark
does. Reported per run and rung: the return, its random-normalised ratio to the teacher's return of the same
episodes, and the run's own figures beside them; per game, the medians over seeds.
Results: ``benchmarks/results/<name>.json``.

    python benchmarks/reevaluate_ladders.py --from-ladder students_vs_teacher_minatar_breakout_dqn_1m_seed1 \\
        students_vs_teacher_minatar_breakout_dqn_1m_seed2 --save-dir runs/dqn_breakout_1m \\
        --name reevaluated_minatar_breakout_dqn_1m
"""

from __future__ import annotations

import argparse
import pathlib
import time
from typing import Any

import torch as th
from common import (
    Clock,
    RandomPolicy,
    evaluation_env,
    median_or_none,
    normalized_or_none,
    saved_ladder_runs,
    write_result,
)
from stable_baselines3.common.vec_env import VecNormalize

from sb3_distill import load_student


def reevaluate(key: str, run: dict[str, Any], teacher: Any, save_dir: str, episodes: int, seed: int, n_envs: int):
    """Teacher, random policy and every saved student of one run on ``episodes`` episodes of seed ``seed``."""
    env = evaluation_env(run["algo"], run["env"], teacher, seed=seed, n_envs=n_envs)
    if isinstance(env, VecNormalize):
        raise SystemExit(f"{key}: the entry normalises observations, and a saved run keeps no statistics")
    clock = Clock()
    teacher_return = clock.evaluate(teacher, env, episodes, seed=seed)
    random_return = clock.evaluate(RandomPolicy(teacher.action_space, seed), env, episodes, seed=seed)
    outcome: dict[str, Any] = {
        "seed": run["seed"],
        "teacher_return": teacher_return,
        "random_return": random_return,
        "run_teacher_return": run["teacher_return"],
        "students": {},
    }
    for rung, recorded in run["students"].items():
        student = load_student(pathlib.Path(save_dir) / f"{run['saved']}_{rung}.zip", device="cpu")
        score = clock.evaluate(student, env, episodes, seed=seed)
        outcome["students"][rung] = {
            "return": score,
            "normalized": normalized_or_none(score, teacher_return, random_return),
            "run_return": recorded["return"],
            "run_normalized": recorded["normalized"],
        }
    env.close()
    return outcome


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over seeds of the teacher's return and of each rung, this evaluation's and the run's."""

    def per_rung(field: str) -> dict[str, float | None]:
        return {rung: median_or_none([run["students"][rung][field] for run in runs]) for rung in runs[0]["students"]}

    return {
        "teacher_return": median_or_none([run["teacher_return"] for run in runs]),
        "normalized": per_rung("normalized"),
        "run_normalized": per_rung("run_normalized"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-ladder", nargs="+", required=True, help="students_vs_teacher result names")
    parser.add_argument("--save-dir", required=True, help="where those runs saved their teachers and students")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--eval-seed", type=int, default=20_000, help="the runs' own evaluation used 10000")
    parser.add_argument("--n-envs", type=int, default=10, help="environments side by side for the episodes")
    parser.add_argument("--name", default="reevaluated_ladders")
    args = parser.parse_args()
    th.set_num_threads(1)
    began = time.perf_counter()
    results: dict[str, Any] = {}
    for key, run, teacher in saved_ladder_runs(args.from_ladder, args.save_dir):
        outcome = reevaluate(key, run, teacher, args.save_dir, args.episodes, args.eval_seed, args.n_envs)
        results.setdefault(key, {"runs": []})["runs"].append(outcome)
        line = ", ".join(
            f"{rung} {value['normalized']:.2f} (run {value['run_normalized']:.2f})"
            for rung, value in outcome["students"].items()
            if value["normalized"] is not None and value["run_normalized"] is not None
        )
        print(f"{key} seed {run['seed']}: teacher {outcome['teacher_return']:.2f}; {line}", flush=True)
    for entry in results.values():
        entry["summary"] = summarize(entry["runs"])
    path = write_result(
        args.name,
        {
            "benchmark": "reevaluate_ladders",
            "ladder_results": args.from_ladder,
            "episodes": args.episodes,
            "eval_seed": args.eval_seed,
            "n_envs": args.n_envs,
            "wall_seconds": time.perf_counter() - began,
            "results": results,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
