"""How sharp should a Q-value teacher's targets be? Offline distillation of saved DQN teachers per temperature.

A DQN teacher's scores are Q-values, not logits: the KL loss softens them as ``softmax(q / temperature)``
(``temperature=None`` is 0.01, Rusu et al. 2015). How peaked that target is depends on the gaps between a
state's Q-values, so on the game's reward scale. For each final teacher of the named ``students_vs_teacher.py``
results saved with ``--save-dir``, each ``--settings`` entry (``t<temperature>``; ``mse``: regress the Q-values;
``nll``: cross-entropy to the teacher's greedy action, the zero-temperature limit; ``+plain``, ``+pooled``, ``+mlp``...:
the student family, as in ``t0.01+pooled``; ``resume``: not a fresh student but the run's own saved student of that
rung, distilled in real time, scored before too) and each ``--rungs`` student of
the teacher's ladder, a fresh student is distilled offline, student-driven, for ``--steps`` environment steps at
the other options' defaults (``--seeds`` student seeds), then scored greedily with the teacher and a random policy
on the same ``--episodes`` episodes of ``--eval-seed``. Reported per run: the returns and random-normalised
ratios; per setting and rung: the median ratio over teachers and seeds, and the median of its difference to the
first setting on the same teacher and seed (the paired comparison: the teachers differ more than the settings).
Results: ``benchmarks/results/<name>.json``.

    python benchmarks/q_temperature.py --from-ladder students_vs_teacher_minatar_breakout_dqn_500k_seed3_5 \\
        --save-dir runs/dqn_breakout_500k --settings t0.01 t0.03 t0.1 t0.3 --rungs 5pct --steps 200000 \\
        --episodes 200 --jobs 2 --name q_temperature_minatar_breakout
    python benchmarks/q_temperature.py --from-ladder students_vs_teacher_minatar_breakout_dqn_500k_seed3_5 \\
        --save-dir runs/dqn_breakout_500k --settings resume --steps 100000 --episodes 200 --jobs 2 \\
        --name q_temperature_minatar_breakout_resume
"""

from __future__ import annotations

import argparse
import copy
import itertools
import pathlib
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch as th
from common import (
    ALGOS,
    FAMILIES,
    RESULTS,
    Clock,
    RandomPolicy,
    evaluation_env,
    median_or_none,
    normalized_or_none,
    saved_ladder_runs,
    write_result,
)
from stable_baselines3.common.vec_env import VecNormalize

from sb3_distill import distill, ladder, load_student
from sb3_distill.envs import register


def setting_options(setting: str) -> dict[str, Any]:
    """
    :param setting: ``+``-joined parts: ``t<temperature>`` (KL at that temperature), ``mse`` or ``nll`` (the loss;
        default: KL at the default temperature), and a student family of ``common.FAMILIES`` (default: the ladder's)
    :return: ``distill``'s options, and ``family`` for :func:`~sb3_distill.ladder`
    """
    options: dict[str, Any] = {}
    for part in setting.split("+"):
        if part == "resume":
            options["resume"] = True
        elif part in ("mse", "nll"):
            options["loss"] = part
        elif part in FAMILIES:
            options["family"] = FAMILIES[part]
        elif part.startswith("t") and part[1:].replace(".", "", 1).isdigit():
            options.update(loss="kl", temperature=float(part[1:]))
        else:
            raise SystemExit(
                f"unknown setting {part!r} in {setting!r}: give t<temperature> (t0.01), mse or nll, "
                f"and/or a student family ({', '.join(FAMILIES)}) or resume, joined by '+'"
            )
    if options.get("resume") and "family" in options:
        raise SystemExit(f"setting {setting!r}: resume starts from the run's own student, whose family is fixed")
    return options


def one_job(job: dict[str, Any]) -> dict[str, Any]:
    """Distil one student of one saved teacher at one setting; score it, the teacher and random on the same episodes."""
    th.set_num_threads(1)
    register()
    teacher = ALGOS[job["algo"]].load(job["teacher_path"], device="cpu")
    options = setting_options(job["setting"])
    alias, student_kwargs = ladder(teacher, family=options.pop("family", None))[job["rung"]]
    start: Any = None
    if options.pop("resume", False):  # the run's own student of this rung, as real time left it
        start = load_student(job["teacher_path"].replace("_teacher.zip", f"_{job['rung']}.zip"))
        alias, student_kwargs = copy.deepcopy(start), None
    env = evaluation_env(job["algo"], job["env"], teacher, seed=job["seed"])
    began = time.perf_counter()
    student = distill(
        teacher,
        alias,
        env,
        job["steps"],
        student_kwargs=student_kwargs,
        collect="student",
        seed=job["seed"],
        **options,
    )
    seconds = time.perf_counter() - began
    clock = Clock()
    scores = {}
    policies = [("teacher", teacher), ("random", RandomPolicy(teacher.action_space, 0)), ("student", student)]
    if start is not None:
        policies.append(("start", start))
    for who, policy in policies:
        scores[who] = clock.evaluate(
            policy, evaluation_env(job["algo"], job["env"], teacher, seed=job["eval_seed"]), job["episodes"]
        )
    return {
        **{key: job[key] for key in ("algo", "env", "run_seed", "setting", "rung", "seed", "steps")},
        "teacher_return": scores["teacher"],
        "random_return": scores["random"],
        "student_return": scores["student"],
        "normalized": normalized_or_none(scores["student"], scores["teacher"], scores["random"]),
        **(
            {"start_normalized": normalized_or_none(scores["start"], scores["teacher"], scores["random"])}
            if start is not None
            else {}
        ),
        "distill_seconds": seconds,
    }


def summarise(runs: list[dict[str, Any]], settings: list[str], rungs: list[str]) -> dict[str, Any]:
    """
    Median ratio per setting and rung, and the median paired difference to the first setting.

    A pair is one teacher (environment and run seed: several ladders may share a seed) and one student seed.
    """

    def pair(run: dict[str, Any]) -> tuple[str, int, int]:
        return run.get("env", ""), run["run_seed"], run["seed"]  # files written before "env" hold one game

    ratios = {(run["setting"], run["rung"], *pair(run)): run["normalized"] for run in runs}
    pairs = sorted({pair(run) for run in runs})
    summary: dict[str, Any] = {}
    for setting, rung in itertools.product(settings, rungs):
        values = [ratios.get((setting, rung, *key)) for key in pairs]
        bases = [ratios.get((settings[0], rung, *key)) for key in pairs]
        differences = [v - b for v, b in zip(values, bases, strict=True) if v is not None and b is not None]
        summary[f"{setting} {rung}"] = {
            "normalized_median": median_or_none(values),
            "normalized_lowest": min((v for v in values if v is not None), default=None),
            "difference_to_first_median": statistics.median(differences) if differences else None,
            "better_than_first": sum(d > 0 for d in differences),
            "pairs": len(differences),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-ladder", nargs="+", required=True, help="students_vs_teacher result stems")
    parser.add_argument("--save-dir", required=True, help="the folder the runs were saved in (--save-dir)")
    parser.add_argument("--settings", nargs="+", default=["t0.01", "t0.03", "t0.1", "t0.3"])
    parser.add_argument("--rungs", nargs="+", default=["5pct"])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=1, help="student seeds per teacher")
    parser.add_argument("--first-seed", type=int, default=0, help="the first student seed")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--eval-seed", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--name", default="q_temperature")
    args = parser.parse_args()
    register()
    jobs = []
    for key, run, teacher in saved_ladder_runs(args.from_ladder, args.save_dir):
        if isinstance(evaluation_env(run["algo"], run["env"], teacher), VecNormalize):
            raise SystemExit(f"{key}: the entry normalises observations, and a saved run keeps no statistics")
        for setting, rung, seed in itertools.product(
            args.settings, args.rungs, range(args.first_seed, args.first_seed + args.seeds)
        ):
            setting_options(setting)
            jobs.append(
                {
                    "algo": run["algo"],
                    "env": run["env"],
                    "run_seed": run["seed"],
                    "setting": setting,
                    "rung": rung,
                    "seed": seed,
                    "steps": args.steps,
                    "episodes": args.episodes,
                    "eval_seed": args.eval_seed,
                    "teacher_path": str(pathlib.Path(args.save_dir) / f"{run['saved']}_teacher.zip"),
                }
            )
    began = time.perf_counter()
    results: list[dict[str, Any]] = []
    data = {
        "benchmark": "q_temperature",
        "from_ladder": args.from_ladder,
        "settings": args.settings,
        "rungs": args.rungs,
        "steps": args.steps,
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "episodes": args.episodes,
        "eval_seed": args.eval_seed,
        "jobs": args.jobs,
    }
    with ProcessPoolExecutor(args.jobs) as pool:
        for outcome in pool.map(one_job, jobs):
            results.append(outcome)
            print(outcome, flush=True)
            write_result(
                args.name,
                {
                    **data,
                    "wall_seconds": time.perf_counter() - began,
                    "runs": results,
                    "summary": summarise(results, args.settings, args.rungs),
                },
            )
    print(f"wrote {RESULTS / (args.name + '.json')}")
    for label, entry in summarise(results, args.settings, args.rungs).items():
        print(label, entry)


if __name__ == "__main__":
    main()
