"""Continuous actions: KL between the Gaussians against MSE on the actions, by budget.

A Pendulum-v1 teacher (an RL-Zoo run folder, ``--teacher``: SAC, TD3 or PPO); a student of the teacher's
algorithm with ``--net-arch`` (default ``[40, 40]``: 2.8% of the RL-Zoo SAC teacher's actor); offline
student-driven distillation, evaluated every ``--eval-every`` environment steps up to ``--steps`` (10 greedy
episodes, fixed seeds), for ``loss="kl"`` (SAC: the Gaussians before the tanh; PPO: the Gaussians) and
``loss="mse"`` (on the actions, in SB3's scaled units). TD3 has no Gaussian: ``--losses mse``.
Reported: the return random-normalised, ``(student - random) / (teacher - random)``, per budget and seed.
Results: ``benchmarks/results/continuous[_<name>].json``.

    python -m rl_zoo3.train --algo sac --env Pendulum-v1 -f zoo-sac --seed 0 --eval-freq -1
    python benchmarks/continuous.py --teacher zoo-sac/sac/Pendulum-v1_1 --jobs 2
    python -m rl_zoo3.train --algo ppo --env Pendulum-v1 -f zoo-ppo --seed 0 --eval-freq -1
    python benchmarks/continuous.py --teacher zoo-ppo/ppo/Pendulum-v1_1 --net-arch 24 --name ppo --jobs 2
    python -m rl_zoo3.train --algo td3 --env Pendulum-v1 -f zoo-td3 --seed 0 --eval-freq -1
    python benchmarks/continuous.py --teacher zoo-td3/td3/Pendulum-v1_1 --losses mse --name td3 --jobs 2
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch as th
from common import RandomPolicy, write_result
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import OfflineDistillation, load_teacher
from sb3_distill.outputs import count_acting_parameters

ENV_ID = "Pendulum-v1"


def mean_return(policy: Any, episodes: int) -> float:
    env = make_vec_env(ENV_ID, n_envs=1, seed=10_000)
    try:
        return float(np.mean(evaluate_policy(policy, env, n_eval_episodes=episodes, deterministic=True)[0]))
    finally:
        env.close()


def run(teacher: str, loss: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    th.set_num_threads(1)
    curve: list[tuple[int, float]] = []
    checkpoints = iter(range(args.eval_every, args.steps + 1, args.eval_every))
    next_at = next(checkpoints)

    def evaluate(num_timesteps: int, students: dict) -> bool:
        nonlocal next_at
        if num_timesteps >= next_at:
            curve.append((num_timesteps, mean_return(students["student"], args.episodes)))
            next_at = next(checkpoints, args.steps * 10)
        return True

    distillation = OfflineDistillation(
        teacher,
        "MlpPolicy",
        make_vec_env(ENV_ID, n_envs=4, seed=seed),
        collect="student",
        student_kwargs={"net_arch": args.net_arch},
        loss=loss,
        seed=seed,
        device="cpu",
    )
    distillation.learn(args.steps, callback=evaluate)
    student = distillation.distiller.students["student"]
    if len(curve) < args.steps // args.eval_every:  # the last budget ends on a collection step, not an update
        curve.append((args.steps, mean_return(student, args.episodes)))
    return {
        "loss": loss,
        "seed": seed,
        "curve": curve,
        "acting_parameters": count_acting_parameters(student),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="a SAC Pendulum-v1 RL-Zoo run folder or zip")
    parser.add_argument("--losses", nargs="+", default=["kl", "mse"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--net-arch", nargs="+", type=int, default=[40, 40], help="the student's net_arch")
    parser.add_argument("--name", default=None, help="results/continuous_<name>.json")
    args = parser.parse_args()
    teacher_model = load_teacher(args.teacher, device="cpu")
    teacher_return = mean_return(teacher_model, args.episodes)
    env = make_vec_env(ENV_ID, n_envs=1, seed=10_000)
    random_return = float(
        np.mean(evaluate_policy(RandomPolicy(env.action_space, seed=0), env, n_eval_episodes=args.episodes)[0])
    )
    jobs = [(loss, seed) for loss in args.losses for seed in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, [args.teacher] * len(jobs), *zip(*jobs, strict=True), [args] * len(jobs)))
    summary: dict[str, Any] = {
        "teacher_algo": type(teacher_model).__name__,
        "teacher_return": teacher_return,
        "random_return": random_return,
    }
    for loss in args.losses:
        for steps in range(args.eval_every, args.steps + 1, args.eval_every):
            normalized = [
                (value - random_return) / (teacher_return - random_return)
                for r in runs
                if r["loss"] == loss
                for at, value in r["curve"]
                if at - at % args.eval_every == steps
            ]
            summary[f"{loss} {steps}"] = {"normalized": normalized, "median": statistics.median(normalized)}
            print(loss, steps, summary[f"{loss} {steps}"])
    teacher_parameters = count_acting_parameters(teacher_model.policy)
    summary["student_share"] = runs[0]["acting_parameters"] / teacher_parameters
    settings = {key: value for key, value in vars(args).items() if key not in ("jobs", "name")}
    # the teacher's run by its last two parts (algo/EnvId_N: no machine path in a result)
    settings["teacher"] = "/".join(pathlib.Path(args.teacher).parts[-2:])
    name = "continuous" if args.name is None else f"continuous_{args.name}"
    student = {"net_arch": args.net_arch}
    write_result(name, {"settings": settings, "student": student, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
