"""Overhead of real-time distillation: teacher training wall time with the callback / without.

Both runs of a pair happen in this one process, alternating which goes first; the figure is the
median ratio over the repeats. Writes ``benchmarks/results/overhead.json``.

    python benchmarks/overhead.py            # full: 7 repeats (about 25 minutes on 2 CPU cores)
    python benchmarks/overhead.py --quick    # 3 repeats, smaller budgets
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import write_result

from sb3_distill import RealTimeDistillCallback

# Teachers: RL-Zoo's tuned CartPole settings (and SB3's defaults for PPO, whose larger updates make the
# relative overhead smaller), SB3's defaults on MinAtar (flattened 10x10x4 frames).
CASES: dict[str, dict[str, Any]] = {
    "ppo/CartPole-v1": {
        "algo": PPO,
        "env": "CartPole-v1",
        "n_envs": 8,
        "kwargs": {
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": 1e-3,
        },
        "timesteps": 30_000,
        "student_kwargs": {"net_arch": [8]},
    },
    "ppo/CartPole-v1/sb3-defaults": {
        "algo": PPO,
        "env": "CartPole-v1",
        "n_envs": 1,
        "kwargs": {},
        "timesteps": 30_000,
        "student_kwargs": {"net_arch": [8]},
    },
    "dqn/CartPole-v1": {
        "algo": DQN,
        "env": "CartPole-v1",
        "n_envs": 1,
        "kwargs": {
            "learning_rate": 2.3e-3,
            "batch_size": 64,
            "buffer_size": 100_000,
            "learning_starts": 1000,
            "gamma": 0.99,
            "target_update_interval": 10,
            "train_freq": 256,
            "gradient_steps": 128,
            "exploration_fraction": 0.16,
            "exploration_final_eps": 0.04,
            "policy_kwargs": {"net_arch": [256, 256]},
        },
        "timesteps": 12_000,
        "student_kwargs": {"net_arch": [8]},
    },
    "ppo/MinAtar/Breakout-v1": {
        "algo": PPO,
        "env": "MinAtar/Breakout-v1",
        "n_envs": 8,
        "kwargs": {"n_steps": 128},
        "timesteps": 30_000,
        "student_kwargs": {"net_arch": [16]},
    },
    "dqn/MinAtar/Breakout-v1": {
        "algo": DQN,
        "env": "MinAtar/Breakout-v1",
        "n_envs": 1,
        "kwargs": {"learning_starts": 1000, "buffer_size": 50_000},
        "timesteps": 15_000,
        "student_kwargs": {"net_arch": [16]},
    },
}


def train(case: dict[str, Any], timesteps: int, seed: int, distill: bool) -> tuple[float, float, BaseAlgorithm, Any]:
    env = make_vec_env(case["env"], n_envs=case["n_envs"], seed=seed)
    teacher = case["algo"]("MlpPolicy", env, seed=seed, **case["kwargs"])
    callback = (
        RealTimeDistillCallback(student="MlpPolicy", student_kwargs=case["student_kwargs"], seed=seed)
        if distill
        else None
    )
    start, start_cpu = time.perf_counter(), time.process_time()
    teacher.learn(timesteps, callback=callback)
    return time.perf_counter() - start, time.process_time() - start_cpu, teacher, callback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats, half the budgets")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 suits these small networks)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    scale = 0.5 if args.quick else 1.0
    if any(case.startswith(("ppo/MinAtar", "dqn/MinAtar")) for case in args.cases):
        import minatar.gym

        if "MinAtar/Breakout-v1" not in gym.registry:
            minatar.gym.register_envs()

    results = {}
    for name in args.cases:
        case = CASES[name]
        timesteps = int(case["timesteps"] * scale)
        times: dict[str, list[float]] = {"without": [], "with": []}
        ratios, cpu_ratios, distill_times, agreements = [], [], [], []
        for repeat in range(repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            pair, cpu_pair = {}, {}
            for distill in order:
                elapsed, cpu, _, callback = train(case, timesteps, seed=repeat, distill=distill)
                pair[distill], cpu_pair[distill] = elapsed, cpu
                times["with" if distill else "without"].append(elapsed)
                if callback is not None:
                    distill_times.append(callback.distiller.total_time_s)
                    agreements.append(callback.model.logger.name_to_value["distill/agreement"])
            ratios.append(pair[True] / pair[False])
            cpu_ratios.append(cpu_pair[True] / cpu_pair[False])
            print(
                f"{name} repeat {repeat}: without {pair[False]:.2f}s with {pair[True]:.2f}s ratio {ratios[-1]:.3f} "
                f"(cpu time {cpu_ratios[-1]:.3f}, distilling {distill_times[-1]:.2f}s)",
                flush=True,
            )
        results[name] = {
            "timesteps": timesteps,
            "n_envs": case["n_envs"],
            "teacher_kwargs": dict(case["kwargs"]),
            "student_kwargs": case["student_kwargs"],
            "seeds": list(range(repeats)),
            "median_ratio": statistics.median(ratios),
            "ratios": ratios,
            "median_cpu_time_ratio": statistics.median(cpu_ratios),
            "cpu_time_ratios": cpu_ratios,
            "seconds_without": times["without"],
            "seconds_with": times["with"],
            "median_distill_fraction": statistics.median(
                d / w for d, w in zip(distill_times, times["with"], strict=True)
            ),
            # The same overhead from inside each run: wall time with / (wall time with - time spent distilling).
            # Immune to the drift between two runs that makes the A/B ratio noisy on a shared machine.
            "median_accounted_ratio": statistics.median(
                w / (w - d) for d, w in zip(distill_times, times["with"], strict=True)
            ),
            "last_logged_agreement": agreements,
        }
        print(f"{name}: median overhead ratio {results[name]['median_ratio']:.3f}", flush=True)

    path = write_result(
        "overhead" if not args.quick else "overhead_quick",
        {
            "benchmark": "overhead",
            "repeats": repeats,
            "torch_threads": args.threads,
            "callback": "RealTimeDistillCallback defaults",
            "cases": results,
        },
    )
    print(f"\nwritten {path}")
    for name, result in results.items():
        fraction = result["median_distill_fraction"]
        print(
            f"  {name:<28} median ratio {result['median_ratio']:.3f} (A/B wall time), "
            f"{result['median_accounted_ratio']:.3f} (accounted: distillation {fraction:.1%} of wall time)"
        )


if __name__ == "__main__":
    main()
