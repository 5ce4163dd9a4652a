"""Which ``epochs``, ``batch_size`` and ``learning_rate`` should the callback default to? Quality against cost.

For each algorithm, environment and seed, the teacher (``hyperparams/<algo>.yml``'s settings) trains once
with one :class:`~sb3_distill.RealTimeDistillCallback` per setting, each distilling its own ladder of three
students (1.7%, 5% and 25% of the teacher's acting parameters). The callback never changes the teacher, so
every setting sees exactly the same batches; they differ only in how the students learn from them.

Reported per setting: the cost, ``(teacher seconds + this setting's distillation seconds) / teacher seconds``
(the teacher's seconds are the run's wall time less every callback's distillation time: the "accounted"
ratio of ``overhead.py``), and each student's return against the teacher's at the end (``--eval-episodes``
greedy episodes, fixed seeds; random-normalised) and its greedy agreement on the teacher's trajectories.
Results: ``benchmarks/results/distill_settings[_<name>].json``.

    python benchmarks/distill_settings.py --jobs 2                       # PPO CartPole + MinAtar Breakout, DQN CartPole
    python benchmarks/distill_settings.py --cases ppo/MinAtar/Breakout-v1 --steps 300000 --name minatar
    python benchmarks/distill_settings.py --cases ppo/MinAtar/SpaceInvaders-v1 --seeds 0 --settings e4_b128 e2_b128 \
        e1_b128 --eval-episodes 100 --name minatar_spaceinvaders_1m_seed0     # a 1M-step CNN teacher
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch as th
from common import EVAL_SEED, Clock, RandomPolicy, evaluation_env, write_result, zoo_teacher

from sb3_distill import RealTimeDistillCallback, ladder
from sb3_distill.evaluation import trajectory_agreement

RATIOS = (0.017, 0.05, 0.25)
#: name -> (epochs, batch_size, learning_rate[, max_grad_norm[, temperature]]); "e4_b128" is the callback's
#: default before this benchmark
SETTINGS: dict[str, tuple[float | None, ...]] = {
    "e8_b128": (8, 128, 1e-3),
    "e8_b128_clip05": (8, 128, 1e-3, 0.5),
    "e4_b128": (4, 128, 1e-3),
    "e4_b128_clip05": (4, 128, 1e-3, 0.5),
    "e8_b128_t01": (8, 128, 1e-3, None, 0.1),
    "e4_b128_t01": (4, 128, 1e-3, None, 0.1),
    "e8_b128_lr025": (8, 128, 2.5e-4),
    "e2_b128": (2, 128, 1e-3),
    "e1_b128": (1, 128, 1e-3),
    "e2_b256": (2, 256, 1e-3),
    "e1_b256": (1, 256, 1e-3),
    "e1_b256_lr2": (1, 256, 2e-3),
}
#: "algo/env id" -> teacher steps
CASES: dict[str, int] = {
    "ppo/CartPole-v1": 100_000,
    "dqn/CartPole-v1": 50_000,
    "ppo/MinAtar/Breakout-v1": 300_000,
    # stronger teachers, MinAtar CNN ladders (one case and seed per run, merged by ``--name``)
    "ppo/MinAtar/SpaceInvaders-v1": 1_000_000,
    "ppo/MinAtar/Freeway-v1": 1_000_000,
    "ppo/MinAtar/Asterix-v1": 1_000_000,
    "ppo/MinAtar/Seaquest-v1": 1_000_000,
    "dqn/MinAtar/Breakout-v1": 1_000_000,
    "dqn/MinAtar/Asterix-v1": 1_000_000,
    "dqn/MinAtar/SpaceInvaders-v1": 1_000_000,
}
DEFAULT_CASES = ["ppo/CartPole-v1", "dqn/CartPole-v1", "ppo/MinAtar/Breakout-v1"]


def teacher_states(teacher: Any, env: Any, n_steps: int) -> th.Tensor:
    """The observations of ``n_steps`` greedy teacher steps, as the student's input tensor."""
    obs, seen = env.reset(), []
    for _ in range(n_steps // env.num_envs):
        seen.append(obs)
        obs, *_ = env.step(teacher.predict(obs, deterministic=True)[0])
    env.close()
    return teacher.policy.obs_to_tensor(np.concatenate(seen))[0].cpu()


@th.no_grad()
def collapse_signs(student: Any, obs: th.Tensor) -> dict[str, Any]:
    """
    What a student that stopped learning looks like on the teacher's states: how many distinct greedy actions
    it takes, and the fraction of its ReLU units (every channel at every position) never active on them.
    """
    outputs: list[th.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        for m in student.modules()
        if isinstance(m, th.nn.ReLU)
    ]
    try:
        actions = student.predict(obs.numpy(), deterministic=True)[0]
    finally:
        for hook in hooks:
            hook.remove()
    never = [float((out.reshape(len(out), -1) > 0).sum(0).eq(0).float().mean()) for out in outputs]
    return {"distinct_actions": len(np.unique(actions)), "dead_relu_fraction": never}


def run(case: str, steps: int, seed: int, settings: list[str], episodes: int) -> dict[str, Any]:
    th.set_num_threads(1)
    algo, env_id = case.split("/", 1)
    teacher, _ = zoo_teacher(algo, env_id, seed)
    rungs = ladder(teacher, RATIOS)
    callbacks = {}
    for name in settings:
        epochs, batch_size, learning_rate, *more = SETTINGS[name]
        max_grad_norm, temperature = [*more, None, None][:2]
        # In the training thread: with background threads the settings' distillations would overlap the
        # teacher and each other, and the cost below could not be read off (the students learn the same).
        callbacks[name] = RealTimeDistillCallback(
            student=rungs,
            epochs=int(epochs),
            batch_size=int(batch_size),
            learning_rate=learning_rate,
            max_grad_norm=max_grad_norm,
            temperature=temperature,
            seed=seed,
            background=False,
        )
    began = time.perf_counter()
    teacher.learn(steps, callback=list(callbacks.values()))
    wall = time.perf_counter() - began
    distill_seconds = {name: callback.distiller.total_time_s for name, callback in callbacks.items()}
    teacher_seconds = wall - sum(distill_seconds.values())

    eval_env = evaluation_env(algo, env_id, teacher)
    probe = teacher_states(teacher, evaluation_env(algo, env_id, teacher), 2000)
    clock = Clock()
    teacher_return = clock.evaluate(teacher, eval_env, episodes, seed=EVAL_SEED)
    random_return = clock.evaluate(RandomPolicy(teacher.action_space, seed), eval_env, episodes, seed=EVAL_SEED)
    span = teacher_return - random_return
    result: dict[str, Any] = {
        "case": case,
        "seed": seed,
        "teacher_steps": steps,
        "teacher_return": teacher_return,
        "random_return": random_return,
        "teacher_seconds": teacher_seconds,
        "compression": rungs.compression,
        "settings": {},
    }
    for name, callback in callbacks.items():
        students = {}
        for rung, student in callback.students.items():
            score = clock.evaluate(student, eval_env, episodes, seed=EVAL_SEED)
            students[rung] = {
                "return": score,
                "normalized": (score - random_return) / span if span > 0 else None,
                "agreement": trajectory_agreement(
                    teacher, student, evaluation_env(algo, env_id, teacher), n_steps=2000
                ),
                **collapse_signs(student, probe),
            }
        result["settings"][name] = {
            "distill_seconds": distill_seconds[name],
            "cost": (teacher_seconds + distill_seconds[name]) / teacher_seconds,
            "students": students,
        }
    line = "; ".join(
        f"{name} cost {value['cost']:.3f} "
        + " ".join(
            f"{s['normalized']:.2f}" if s["normalized"] is not None else "n/a" for s in value["students"].values()
        )
        for name, value in result["settings"].items()
    )
    print(f"{case} seed {seed}: teacher {teacher_return:.2f}; {line}", flush=True)
    return result


def summarize(runs: list[dict[str, Any]], settings: list[str]) -> dict[str, Any]:
    """Per setting: median cost, and per rung the median and lowest random-normalised return over seeds."""
    summary: dict[str, Any] = {}
    for name in settings:
        entry: dict[str, Any] = {"cost": statistics.median(run["settings"][name]["cost"] for run in runs)}
        for rung in runs[0]["settings"][name]["students"]:
            values = [run["settings"][name]["students"][rung] for run in runs]
            normalized = [value["normalized"] for value in values if value["normalized"] is not None]
            entry[rung] = {
                "normalized_median": statistics.median(normalized) if normalized else None,
                "normalized_lowest": min(normalized) if normalized else None,
                "agreement_median": statistics.median(value["agreement"] for value in values),
            }
        summary[name] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=list(CASES))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="teacher steps of every case (default: per case)")
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (one torch thread each)")
    parser.add_argument("--name", default=None, help="results/distill_settings_<name>.json")
    args = parser.parse_args()
    jobs = [(case, args.steps or CASES[case], seed) for case in args.cases for seed in args.seeds]
    began = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run, *job, args.settings, args.eval_episodes) for job in jobs]
        runs = [future.result() for future in futures]
    results = {}
    for case in args.cases:
        case_runs = [run for run in runs if run["case"] == case]
        results[case] = {"summary": summarize(case_runs, args.settings), "runs": case_runs}
        for name, entry in results[case]["summary"].items():
            rungs = ", ".join(
                f"{rung} {value['normalized_median']:.2f} (lowest {value['normalized_lowest']:.2f})"
                for rung, value in entry.items()
                if rung != "cost" and value["normalized_median"] is not None
            )
            print(f"{case} {name}: cost {entry['cost']:.3f}; {rungs}")
    write_result(
        "distill_settings" if args.name is None else f"distill_settings_{args.name}",
        {
            "benchmark": "distill_settings",
            "settings": {name: SETTINGS[name] for name in args.settings},
            "ratios": list(RATIOS),
            "seeds": args.seeds,
            "eval_episodes": args.eval_episodes,
            "jobs": args.jobs,
            "teacher_settings": "hyperparams/<algo>.yml",
            "wall_seconds": time.perf_counter() - began,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
