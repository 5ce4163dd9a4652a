"""A compression curve from one teacher run: a ladder of students distilled in real time, against their teacher.

For each algorithm (PPO, DQN), environment and seed, with the teacher settings of ``hyperparams/<algo>.yml``:

- the teacher trains alone (timed);
- the same teacher trains again with ``RealTimeDistillCallback(student=ladder(teacher, RATIOS))``:
  three students at about 1.7%, 5% and 25% of its acting parameters, distilled from the same batches.
  Teacher and students are evaluated along the way (``--curve-points`` times, evaluations off the
  clock) for the learning curves. The callback leaves the teacher bit for bit as it trains alone; the
  result records whether the two teachers came out identical (both learn from the same state of the global
  generators; the result files written before that was so read ``false`` in every run, the second teacher
  having started where the first left the generators: a flaw of this script, not of the callback, whose
  invariance ``tests/test_realtime.py`` checks).

Reported per run: the teacher's final return and each student's (``--eval-episodes`` episodes, same
evaluation seed), student / teacher return, the same normalised by a random policy's return (for
negative returns, as on Acrobot), compression, greedy agreement on the teacher's trajectories, and the
wall time with and without distillation (alternating which goes first). Writes
``benchmarks/results/students_vs_teacher[_quick].{json,md}`` and PNG plots beside them: student / teacher
against compression per game, and the learning curves of teacher and students on one time axis.

    python benchmarks/students_vs_teacher.py --quick            # PPO CartPole + MinAtar Breakout, DQN CartPole, 2 seeds
    python benchmarks/students_vs_teacher.py --jobs 2           # full: PPO and DQN, 7 environments, 3 seeds
    python benchmarks/students_vs_teacher.py --algos ppo --envs MinAtar/Breakout-v1 --seeds 1
    python benchmarks/students_vs_teacher.py --algos ppo --envs MinAtar/Breakout-v1 --seeds 1 --first-seed 1 \
        --timesteps 1000000 --name students_vs_teacher_minatar_breakout_cnn_1m_seed1
    python benchmarks/students_vs_teacher.py --algos ppo --envs MinAtar/Seaquest-v1 --seeds 1 \
        --timesteps 5000000 --no-baseline --name students_vs_teacher_minatar_seaquest_cnn_5m

``--no-baseline`` skips the teacher trained alone (for long runs: half the time; the overhead and the
bit-for-bit check are then not recorded). ``--save-dir`` keeps each trained teacher and its students
(``<algo>_<env>_<seed>_teacher.zip``, ``..._<rung>.zip``), for offline distillation from the same teacher.

``--catch-up N`` and ``--finish N`` set the callback's ``catch_up`` and ``finish_steps``; each rung is then also scored
as it was before them (``before_catch_up``, ``before_finish``), on the same episodes:

    python benchmarks/students_vs_teacher.py --algos dqn --envs MinAtar/Breakout-v1 --seeds 3 --first-seed 21 \
        --timesteps 500000 --eval-episodes 200 --jobs 2 --no-baseline --finish 100000 \
        --name students_vs_teacher_minatar_breakout_dqn_500k_finish

``--quick`` takes about 25 minutes on 2 CPU cores. The full size (42 runs, each training its teacher
twice; MinAtar at 500k teacher steps) takes about 8 hours on 2 CPU cores (``--jobs 2``: about 5).
``--jobs`` runs in parallel processes (one torch thread each), which also makes the wall times noisier.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import pathlib
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch as th
from common import (
    EVAL_SEED,
    RESULTS,
    Clock,
    RandomPolicy,
    evaluation_env,
    median_or_none,
    normalized_or_none,
    sync_normalization,
    write_result,
    zoo_teacher,
)
from stable_baselines3.common.callbacks import BaseCallback

from sb3_distill import RealTimeDistillCallback, ladder, save_student
from sb3_distill.evaluation import trajectory_agreement
from sb3_distill.serialization import atomic_write_bytes

RATIOS = (0.017, 0.05, 0.25)
MINATAR = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
#: env id -> algo -> (teacher steps: full, quick)
CASES: dict[str, dict[str, tuple[int, int]]] = {
    "CartPole-v1": {"ppo": (100_000, 60_000), "dqn": (50_000, 50_000)},
    "Acrobot-v1": {"ppo": (300_000, 100_000), "dqn": (100_000, 100_000)},
    **{f"MinAtar/{game}-v1": {"ppo": (500_000, 200_000), "dqn": (500_000, 100_000)} for game in MINATAR},
}
QUICK = [("ppo", "CartPole-v1"), ("ppo", "MinAtar/Breakout-v1"), ("dqn", "CartPole-v1")]


class Curves(BaseCallback):
    """Evaluates the teacher and every student every ``every`` teacher steps, off the clock."""

    def __init__(self, distill: RealTimeDistillCallback, clock: Clock, env: Any, every: int, episodes: int) -> None:
        super().__init__()
        self.distill, self.clock, self.env, self.every, self.episodes = distill, clock, env, every, episodes
        self.points: list[dict[str, Any]] = []
        self.next_eval = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval and self.distill.n_distillations > 0:
            self.next_eval += self.every
            point = {"steps": self.num_timesteps, "seconds": self.clock.now()}
            sync_normalization(self.env, self.model)
            point["teacher"] = self.clock.evaluate(self.model, self.env, self.episodes)
            for name, student in self.distill.students.items():
                point[name] = self.clock.evaluate(student, self.env, self.episodes)
            self.points.append(point)
        return True


class KeepsStudentsBeforeTheEnd(RealTimeDistillCallback):
    """The callback, keeping copies of its students as they were before the catch-up and the finish (A/B)."""

    before_catch_up: dict[str, Any] | None = None
    catch_up_seconds: float | None = None
    before_finish: dict[str, Any] | None = None
    finish_seconds: float | None = None

    def catch_up_distill(self) -> dict[str, Any] | None:
        if self.memory is not None and self.distiller is not None and self.before_catch_up is None:
            self.before_catch_up = copy.deepcopy(self.students)
        metrics = super().catch_up_distill()
        if metrics is not None:
            self.catch_up_seconds = metrics["time_s"]
        return metrics

    def finish_distill(self) -> dict[str, Any] | None:
        if self.finish_venv is not None and self.distiller is not None and self.before_finish is None:
            self.before_finish = copy.deepcopy(self.students)
        metrics = super().finish_distill()
        if metrics is not None:
            self.finish_seconds = metrics["time_s"]
        return metrics


def policy_vector(teacher: Any) -> th.Tensor:
    return th.cat([p.detach().flatten().cpu() for p in teacher.policy.parameters()])


class Job(NamedTuple):
    """One run: a teacher and its ladder."""

    algo: str
    env_id: str
    steps: int
    seed: int
    episodes: int
    curve_points: int
    threads: int
    #: also train the teacher alone (the overhead and the bit-for-bit check)
    baseline: bool = True
    #: where to save the trained teacher and its students (``None``: not saved)
    save_dir: str | None = None
    #: the callback's ``catch_up`` (0: off); the students are also evaluated as they were before it
    catch_up: int = 0
    #: the callback's ``finish_steps`` (0: off); the students are also evaluated as they were before the finish
    finish: int = 0


def run(job: Job) -> dict[str, Any]:
    algo, env_id, steps, seed, episodes, curve_points, threads, baseline, save_dir, catch_up, finish = job
    th.set_num_threads(threads)
    result: dict[str, Any] = {"algo": algo, "env": env_id, "seed": seed, "teacher_steps": steps}
    teacher, _ = zoo_teacher(algo, env_id, seed)
    generators = random.getstate(), np.random.get_state(), th.get_rng_state()
    result["device"] = th.cuda.get_device_name(teacher.device) if teacher.device.type == "cuda" else "cpu"
    rungs = ladder(teacher, RATIOS)
    eval_env = evaluation_env(algo, env_id, teacher)
    finishing = {"finish_steps": finish, "finish_env": evaluation_env(algo, env_id, teacher, seed=20_000 + seed)}
    distill = KeepsStudentsBeforeTheEnd(student=rungs, seed=seed, catch_up=catch_up, **(finishing if finish else {}))
    alone = zoo_teacher(algo, env_id, seed)[0] if baseline else None
    for distilled in (False, True) if seed % 2 == 0 else (True, False):
        # Each teacher learns from the global generators as the teacher's construction left them (the ladder,
        # the environments and the other teacher draw from them), so that the two can come out identical.
        random.setstate(generators[0])
        np.random.set_state(generators[1])
        th.set_rng_state(generators[2])
        if distilled:
            clock = Clock()
            curves = Curves(distill, clock, eval_env, max(steps // curve_points, 1), episodes=5)
            teacher.learn(steps, callback=[distill, curves])
            result["seconds_with"] = clock.now()
        elif alone is not None:
            began = time.perf_counter()
            alone.learn(steps)
            result["seconds_without"] = time.perf_counter() - began
    # without the baseline (--no-baseline) there is no overhead and no bit-for-bit check
    result["overhead"] = result["seconds_with"] / result["seconds_without"] if alone is not None else None
    result["distill_seconds"] = distill.distiller.total_time_s
    result["teacher_identical_to_teacher_alone"] = (
        bool(th.equal(policy_vector(alone), policy_vector(teacher))) if alone is not None else None
    )
    result["curve"] = curves.points

    eval_env = evaluation_env(algo, env_id, teacher)  # normalisation stats as the teacher ends
    clock = Clock()
    result["eval_seed"] = EVAL_SEED  # every policy below on the same episodes (before: one after the other)
    result["teacher_return"] = clock.evaluate(teacher, eval_env, episodes, seed=EVAL_SEED)
    result["random_return"] = clock.evaluate(
        RandomPolicy(teacher.action_space, seed), eval_env, episodes, seed=EVAL_SEED
    )

    def scores(student: Any) -> dict[str, Any]:
        score = clock.evaluate(student, eval_env, episodes, seed=EVAL_SEED)
        return {
            "return": score,
            "ratio": score / result["teacher_return"] if result["teacher_return"] > 0 else None,
            "normalized": normalized_or_none(score, result["teacher_return"], result["random_return"]),
            "agreement": trajectory_agreement(teacher, student, evaluation_env(algo, env_id, teacher), n_steps=2000),
        }

    students: dict[str, Any] = {}
    for name, student in distill.students.items():
        students[name] = {
            "target_compression": rungs.targets[name],
            "compression": rungs.compression[name],
            "acting_parameters": rungs.parameters[name],
            "student_kwargs": repr(rungs[name][1]),
            **scores(student),
        }
        if distill.before_catch_up is not None:  # the same students without the catch-up
            students[name]["before_catch_up"] = scores(distill.before_catch_up[name])
        if distill.before_finish is not None:  # the same students without the finish (after any catch-up)
            students[name]["before_finish"] = scores(distill.before_finish[name])
    result["students"] = students
    result["catch_up"] = catch_up
    result["catch_up_seconds"] = distill.catch_up_seconds
    result["finish"] = finish
    result["finish_seconds"] = distill.finish_seconds
    if save_dir is not None:
        stem = pathlib.Path(save_dir) / f"{algo}_{env_id.replace('/', '-')}_{seed}"
        teacher.save(f"{stem}_teacher.zip")
        for name, student in distill.students.items():
            save_student(student, f"{stem}_{name}.zip")
        result["saved"] = stem.name  # the file stem in --save-dir (no machine path in the result)
    line = ", ".join(
        f"{name} {value['return']:.2f} (agreement {value['agreement']:.2f})" for name, value in students.items()
    )
    print(
        f"{algo} {env_id} seed {seed}: teacher {result['teacher_return']:.2f}, students {line}; "
        f"overhead {result['overhead'] if result['overhead'] is None else round(result['overhead'], 3)}",
        flush=True,
    )
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over seeds, per student rung."""
    rungs = list(runs[0]["students"])
    summary: dict[str, Any] = {
        "teacher_return": statistics.median(run["teacher_return"] for run in runs),
        "overhead": median_or_none([run["overhead"] for run in runs]),
        "students": {},
    }
    for name in rungs:
        values = [run["students"][name] for run in runs]
        summary["students"][name] = {
            "compression": statistics.median(value["compression"] for value in values),
            "return": statistics.median(value["return"] for value in values),
            "normalized": median_or_none([value["normalized"] for value in values]),
            "agreement": statistics.median(value["agreement"] for value in values),
        }
    return summary


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| algo | environment | teacher return | student | compression | student return | "
        "student / teacher (normalised) | agreement | overhead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, result in results.items():
        algo, env_id = key.split(" ", 1)
        summary = result["summary"]
        for name, student in summary["students"].items():
            normalized = "n/a" if student["normalized"] is None else f"{student['normalized']:.2f}"
            overhead = "n/a" if summary["overhead"] is None else f"{summary['overhead']:.2f}"
            lines.append(
                f"| {algo} | {env_id} | {summary['teacher_return']:.2f} | {name} | {student['compression']:.2%} | "
                f"{student['return']:.2f} | {normalized} | {student['agreement']:.2f} | {overhead} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], stem: str) -> list[pathlib.Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for key, result in results.items():
        students = result["summary"]["students"]
        points = [(s["compression"], s["normalized"]) for s in students.values() if s["normalized"] is not None]
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", label=key)
    axis.set_xscale("log")
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.axhline(0.95, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xlabel("student / teacher acting parameters")
    axis.set_ylabel("student / teacher return (random-normalised, median)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    path = RESULTS / f"{stem}_compression.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    written.append(path)

    figure, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.5), squeeze=False)
    for axis, (key, result) in zip(axes[0], results.items(), strict=True):
        curve = result["runs"][0]["curve"]
        for name in ["teacher", *result["runs"][0]["students"]]:
            axis.plot([p["seconds"] for p in curve], [p[name] for p in curve], label=name)
        axis.set_title(f"{key} (seed {result['runs'][0]['seed']})", fontsize=9)
        axis.set_xlabel("wall seconds (evaluations excluded)")
        axis.set_ylabel("return")
        axis.legend(fontsize=7)
    figure.tight_layout()
    path = RESULTS / f"{stem}_curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    written.append(path)
    return written


def benchmark(jobs: list[Job], processes: int, stem: str, extra: dict[str, Any]) -> None:
    """
    Run every job; write the JSON, the markdown table and the plots.

    :param jobs: the runs
    :param processes: parallel processes
    :param stem: result file stem under ``benchmarks/results/``
    :param extra: more fields for the JSON record
    """
    began = time.perf_counter()
    # Spawned workers: a forked one could inherit a CUDA context it cannot use.
    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(run, jobs))
    results: dict[str, Any] = {}
    for result in runs:
        results.setdefault(f"{result['algo']} {result['env']}", {"runs": []})["runs"].append(result)
    for result in results.values():
        result["summary"] = summarize(result["runs"])
    table = markdown(results)
    plots = plot(results, stem)
    atomic_write_bytes(table.encode(), RESULTS / f"{stem}.md")
    record = {
        "benchmark": "students_vs_teacher",
        "ratios": list(RATIOS),
        "seeds": sorted({job.seed for job in jobs}),
        "devices": sorted({run["device"] for run in runs}),
        "eval_episodes": jobs[0].episodes,
        "jobs": processes,
        "wall_seconds": time.perf_counter() - began,
        "teacher_settings": "hyperparams/<algo>.yml",
        **extra,
        "plots": [plot.name for plot in plots],
        "results": results,
    }
    path = write_result(stem, record)
    print(f"\n{table}\nwritten {path}, {stem}.md, " + ", ".join(plot.name for plot in plots))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="PPO CartPole and MinAtar Breakout, DQN CartPole; 2 seeds")
    parser.add_argument("--algos", nargs="*", default=["ppo", "dqn"], choices=["ppo", "dqn"])
    parser.add_argument("--envs", nargs="*", default=None, choices=list(CASES))
    parser.add_argument("--seeds", type=int, default=None, help="how many seeds (default 3, --quick 2)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (runs of one game merge by --name)")
    # 100: on MinAtar a policy's 30-episode mean moves by up to a third between episode sets (the runs written
    # before this default used 30; reevaluate_ladders.py scores their saved students again)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--curve-points", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (one torch thread each)")
    parser.add_argument("--timesteps", type=int, default=None, help="teacher steps of every case (a smoke test)")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="do not train the teacher alone (half the time; no overhead and no bit-for-bit check recorded)",
    )
    parser.add_argument(
        "--catch-up",
        type=int,
        default=0,
        help="the callback's catch_up (observations relabelled by the final teacher); students also scored before it",
    )
    parser.add_argument(
        "--finish",
        type=int,
        default=0,
        help="the callback's finish_steps (each student drives its own environment, the final teacher labels); "
        "students also scored before it",
    )
    parser.add_argument("--save-dir", default=None, help="save each trained teacher and its students there")
    parser.add_argument("--name", default=None, help="result file stem (default students_vs_teacher[_quick])")
    args = parser.parse_args()
    th.set_num_threads(1)
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds or (2 if args.quick else 3))))
    if args.quick and args.envs is None:
        pairs = [(algo, env_id) for algo, env_id in QUICK if algo in args.algos]
    else:
        pairs = [(algo, env_id) for algo in args.algos for env_id in args.envs or list(CASES)]
    jobs = [
        Job(
            algo,
            env_id,
            args.timesteps or CASES[env_id][algo][int(args.quick)],
            seed,
            args.eval_episodes,
            args.curve_points,
            1,
            baseline=not args.no_baseline,
            save_dir=args.save_dir,
            catch_up=args.catch_up,
            finish=args.finish,
        )
        for algo, env_id in pairs
        for seed in seeds
    ]
    stem = args.name or ("students_vs_teacher_quick" if args.quick else "students_vs_teacher")
    benchmark(jobs, args.jobs, stem, {"size": "quick" if args.quick else "full"})


if __name__ == "__main__":
    main()
