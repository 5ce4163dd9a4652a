"""Real-time distillation against the sequential pipeline: wall time until the student is as good as the teacher.

For each environment and seed, with the teacher settings and student of ``hyperparams/ppo.yml``:

- real-time: the teacher trains with ``RealTimeDistillCallback``; the student is evaluated every
  ``--eval-every`` teacher steps;
- sequential: the same teacher trains alone, then ``sb3_distill.distill`` (student-driven collection,
  the strongest offline mode measured here) distils it, the student evaluated after every update
  batch of ``--eval-every`` collected steps.

The time to target is the wall time (evaluations excluded) until the student's mean return first
reaches 95% of the final teacher's return of the same run; the sequential time includes training its
teacher. The real-time paper (Sun & Fazli, 2019) reports the real-time total at half the sequential
one or less. Results: ``benchmarks/results/offline_vs_realtime[_quick].json``.

    python benchmarks/offline_vs_realtime.py          # CartPole, MinAtar Breakout and Asterix, 3 seeds: about 50 min
    python benchmarks/offline_vs_realtime.py --quick  # smaller budgets, 2 seeds: 10 min on 2 CPU cores (3 seeds: 15)
    python benchmarks/offline_vs_realtime.py --envs MinAtar/Breakout-v1 --name offline_vs_realtime_minatar_breakout
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import torch as th
from common import Clock, evaluation_env, write_result, zoo_teacher
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy

from sb3_distill import RealTimeDistillCallback, distill
from sb3_distill.zoo import zoo_experiment

#: env id -> (teacher steps: full, quick)
CASES = {
    "CartPole-v1": (100_000, 60_000),
    "MinAtar/Breakout-v1": (500_000, 200_000),
    "MinAtar/Asterix-v1": (500_000, 200_000),
}
TARGET = 0.95


class EvaluateStudent(BaseCallback):
    """Evaluates the real-time student every ``every`` teacher steps."""

    def __init__(self, distill_callback: RealTimeDistillCallback, clock: Clock, env: Any, every: int, episodes: int):
        super().__init__()
        self.distill, self.clock, self.env, self.every, self.episodes = distill_callback, clock, env, every, episodes
        self.curve: list[tuple[int, float, float]] = []  # (teacher steps, seconds, student return)
        self.next_eval = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval and self.distill.n_distillations > 0:
            self.next_eval += self.every
            score = self.clock.evaluate(self.distill.student, self.env, self.episodes)
            self.curve.append((self.num_timesteps, self.clock.now(), score))
        return True


def time_to_target(curve: list[tuple[int, float, float]], target: float) -> float | None:
    return next((seconds for _, seconds, score in curve if score >= target), None)


def run_realtime(env_id: str, steps: int, seed: int, every: int, episodes: int) -> dict[str, Any]:
    teacher, options = zoo_teacher("ppo", env_id, seed)
    env = evaluation_env("ppo", env_id, teacher)
    clock = Clock()
    callback = RealTimeDistillCallback(seed=seed, **options)
    evaluation = EvaluateStudent(callback, clock, env, every, episodes)
    teacher.learn(steps, callback=[callback, evaluation])
    total = clock.now()
    teacher_return = clock.evaluate(teacher, env, episodes)
    return {"curve": evaluation.curve, "seconds": total, "teacher_return": teacher_return}


def run_sequential(env_id: str, steps: int, seed: int, every: int, episodes: int, offline_steps: int) -> dict[str, Any]:
    teacher, options = zoo_teacher("ppo", env_id, seed)
    env = evaluation_env("ppo", env_id, teacher)
    clock = Clock()
    teacher.learn(steps)
    teacher_seconds = clock.now()
    teacher_return = clock.evaluate(teacher, env, episodes)
    curve: list[tuple[int, float, float]] = []
    next_eval = [every]

    def evaluate(step: int, students: dict[str, BasePolicy]) -> bool:
        if step >= next_eval[0]:
            next_eval[0] += every
            score = clock.evaluate(students["student"], env, episodes)
            curve.append((step, clock.now(), score))
            return score < TARGET * teacher_return  # stop once the target is reached
        return True

    experiment = zoo_experiment("ppo", env_id, n_envs=8, seed=seed + 1)
    student_options = {
        key: options[key] for key in ("student", "student_kwargs", "learning_rate", "batch_size", "epochs")
    }
    distill(
        teacher,
        env=experiment.env,
        n_steps=offline_steps,
        collect="student",
        seed=seed,
        callback=evaluate,
        **student_options,
    )
    return {
        "curve": curve,
        "teacher_seconds": teacher_seconds,
        "seconds": clock.now(),
        "teacher_return": teacher_return,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller budgets, 2 seeds")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--envs", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--name", default=None, help="result file stem (default offline_vs_realtime[_quick])")
    args = parser.parse_args()
    th.set_num_threads(1)
    seeds = list(range(args.seeds or (2 if args.quick else 3)))
    results: dict[str, Any] = {}
    for env_id in args.envs:
        steps = CASES[env_id][1 if args.quick else 0]
        every = max(steps // 20, 1)
        runs = []
        for seed in seeds:
            realtime = run_realtime(env_id, steps, seed, every, args.eval_episodes)
            sequential = run_sequential(env_id, steps, seed, every // 2, args.eval_episodes, offline_steps=steps // 2)
            realtime_time = time_to_target(realtime["curve"], TARGET * realtime["teacher_return"])
            sequential_time = time_to_target(sequential["curve"], TARGET * sequential["teacher_return"])
            ratio = realtime_time / sequential_time if realtime_time and sequential_time else None
            runs.append(
                {
                    "seed": seed,
                    "realtime": realtime,
                    "sequential": sequential,
                    "realtime_seconds_to_target": realtime_time,
                    "sequential_seconds_to_target": sequential_time,
                    "ratio": ratio,
                }
            )
            print(
                f"{env_id} seed {seed}: teacher {realtime['teacher_return']:.1f} / {sequential['teacher_return']:.1f}; "
                f"seconds to {TARGET:.0%}: real-time {realtime_time}, sequential {sequential_time}, ratio {ratio}",
                flush=True,
            )
        ratios = [run["ratio"] for run in runs if run["ratio"] is not None]
        results[env_id] = {
            "teacher_steps": steps,
            "offline_steps": steps // 2,
            "eval_every": every,
            "runs": runs,
            "median_ratio": statistics.median(ratios) if ratios else None,
            "reached_target": {
                "realtime": sum(run["realtime_seconds_to_target"] is not None for run in runs),
                "sequential": sum(run["sequential_seconds_to_target"] is not None for run in runs),
            },
        }
    path = write_result(
        args.name or ("offline_vs_realtime_quick" if args.quick else "offline_vs_realtime"),
        {
            "benchmark": "offline_vs_realtime",
            "target": TARGET,
            "seeds": seeds,
            "eval_episodes": args.eval_episodes,
            "teacher_settings": "hyperparams/ppo.yml",
            "offline_collection": "student",
            "results": results,
        },
    )
    print(f"\nwritten {path}")
    for env_id, result in results.items():
        print(f"  {env_id:<22} median real-time / sequential time to target: {result['median_ratio']}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
