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

At full size with strong teachers, ``--from-ladder`` reuses long ``students_vs_teacher.py`` runs instead of
training teachers again: for each run of the named results saved with ``--save-dir``, the real-time side is
that run's curve (its rungs evaluated on 5 episodes at ``--curve-points`` points, then its final evaluation);
the sequential side distils a fresh student of the same rung offline from the saved final teacher (same
collection as above), evaluated every ``--eval-every`` collected steps, and adds the teacher's time alone,
estimated from ``--probe-steps`` steps of the same teacher trained alone here (the long runs were made with
``--no-baseline``). The target is 95% of the run's final teacher return. PPO and DQN runs alike: the
teacher's algorithm, settings and ladder are the run's.

    python benchmarks/offline_vs_realtime.py --from-ladder students_vs_teacher_minatar_breakout_cnn_4m_seed1 \
        --save-dir runs/breakout_cnn_4m_seed1 --rungs 5pct 25pct --name offline_vs_realtime_minatar_breakout_4m
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch as th
from common import Clock, evaluation_env, saved_ladder_runs, write_result, zoo_teacher
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from students_vs_teacher import RATIOS

from sb3_distill import RealTimeDistillCallback, distill, ladder
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


def sequential_from_saved(
    algo: str,
    teacher: Any,
    rung: tuple[Any, dict[str, Any]],
    env_id: str,
    seed: int,
    target: float,
    every: int,
    steps: int,
) -> dict[str, Any]:
    """Distil a fresh student of one rung offline from a saved final teacher until it reaches ``target``."""
    env = evaluation_env(algo, env_id, teacher)
    clock = Clock()
    curve: list[tuple[int, float, float]] = []
    next_eval = [every]

    def evaluate(step: int, students: dict[str, BasePolicy]) -> bool:
        if step >= next_eval[0]:
            next_eval[0] += every
            score = clock.evaluate(students["student"], env, 10)
            curve.append((step, clock.now(), score))
            return score < target  # stop once the target is reached
        return True

    distill(
        teacher,
        student=rung[0],
        student_kwargs=rung[1],
        env=zoo_experiment(algo, env_id, n_envs=8, seed=seed + 1).env,
        n_steps=steps,
        collect="student",
        seed=seed,
        callback=evaluate,
    )
    return {"curve": curve, "seconds_to_target": time_to_target(curve, target)}


def teacher_seconds_per_step(algo: str, env_id: str, seed: int, steps: int) -> float:
    """The teacher's wall time per step trained alone, from a short run of the same settings here."""
    teacher, _ = zoo_teacher(algo, env_id, seed)
    began = time.perf_counter()
    teacher.learn(steps)
    return (time.perf_counter() - began) / steps


def from_ladder(
    names: list[str], save_dir: str, rungs: list[str], every: int, steps: int, probe: int, stem: str
) -> None:
    """The ``--from-ladder`` mode: real-time curves of saved long runs against offline distillation afterwards."""
    results: dict[str, Any] = {}
    for key, run, teacher in saved_ladder_runs(names, save_dir):
        algo, env_id, seed = run["algo"], run["env"], run["seed"]
        target = TARGET * run["teacher_return"]
        teacher_seconds = teacher_seconds_per_step(algo, env_id, seed, probe) * run["teacher_steps"]
        specs = ladder(teacher, RATIOS)
        outcome: dict[str, Any] = {"teacher_return": run["teacher_return"], "target": target}
        outcome["teacher_seconds_alone_estimated"] = teacher_seconds
        for rung in rungs:
            # real time: the curve's points, then the final evaluation when training ended
            points = [(p["steps"], p["seconds"], p[rung]) for p in run["curve"]]
            points.append((run["teacher_steps"], run["seconds_with"], run["students"][rung]["return"]))
            realtime = time_to_target(points, target)
            sequential = sequential_from_saved(algo, teacher, specs[rung], env_id, seed, target, every, steps)
            offline = sequential["seconds_to_target"]
            total = None if offline is None else teacher_seconds + offline
            outcome[rung] = {
                "realtime_seconds_to_target": realtime,
                "offline_seconds_to_target": offline,
                "sequential_seconds_to_target": total,
                "ratio": realtime / total if realtime is not None and total is not None else None,
                "offline_curve": sequential["curve"],
            }
            print(f"{key} seed {seed} {rung}: real-time {realtime}, sequential {total}", flush=True)
        results[f"{key} seed {seed}"] = outcome
    path = write_result(
        stem,
        {
            "benchmark": "offline_vs_realtime",
            "mode": "from_ladder",
            "ladder_results": names,
            "target": TARGET,
            "offline_steps": steps,
            "eval_every": every,
            "probe_steps": probe,
            "offline_collection": "student",
            "results": results,
        },
    )
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller budgets, 2 seeds")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--envs", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--name", default=None, help="result file stem (default offline_vs_realtime[_quick])")
    parser.add_argument("--from-ladder", nargs="*", default=None, help="students_vs_teacher result names")
    parser.add_argument("--save-dir", default=None, help="where those runs saved their teachers (--from-ladder)")
    parser.add_argument("--rungs", nargs="*", default=["5pct", "25pct"], help="ladder rungs compared (--from-ladder)")
    parser.add_argument("--eval-every", type=int, default=25_000, help="offline steps between evaluations")
    parser.add_argument("--offline-steps", type=int, default=400_000, help="offline budget per rung (--from-ladder)")
    parser.add_argument("--probe-steps", type=int, default=100_000, help="teacher steps timed alone (--from-ladder)")
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.from_ladder:
        if args.save_dir is None:
            parser.error("--from-ladder needs --save-dir, the folder the runs saved their teachers in")
        stem = args.name or "offline_vs_realtime_from_ladder"
        options = args.rungs, args.eval_every, args.offline_steps, args.probe_steps, stem
        from_ladder(args.from_ladder, args.save_dir, *options)
        return
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
