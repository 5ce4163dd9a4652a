"""Overhead of real-time distillation: teacher training wall time with the callback / without.

Variants, all with the callback's default options unless named: ``one`` student (the case's own), a ``ladder`` of
three students (1.7%, 5%, 25% of the teacher, :func:`sb3_distill.students.ladder`), the same ladder run one student
after another (``ladder-unpacked``: without :mod:`sb3_distill.packing`), one student and the ladder fitted in the
training thread (``one-foreground``, ``ladder-foreground``: ``background=False``, as before the background thread),
with ``epochs=4`` (``one-4epochs``, ``ladder-4epochs``, the default before ``benchmarks/distill_settings.py``), the
ladder with ``epochs=1`` (``ladder-1epoch``, ``ladder-1epoch-foreground``), the ladder fitted in a second thread or
process (``ladder-thread``, ``one-thread``, ``ladder-process``, ``one-process``, ``ladder-4epochs-process``; the
default forks a process on Linux), and one student with image batches left channels-first in memory
(``one-channels-first``, as before the distiller stored them channels-last). Every repeat runs the teacher alone and
each variant in this one process, in a rotating order; the figure is the median ratio over the repeats; "accounted"
(wall time / (wall time - seconds spent distilling), measured inside each run) only for the foreground variants,
whose distillation does not overlap the teacher. Writes ``benchmarks/results/overhead[_quick].json``.

    python benchmarks/overhead.py            # full: 7 repeats (about an hour on 2 CPU cores)
    python benchmarks/overhead.py --quick    # 3 repeats, smaller budgets
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import write_result

from sb3_distill import RealTimeDistillCallback, ladder
from sb3_distill.architectures import MinAtarCNN
from sb3_distill.ladder import atari_cnn_student
from sb3_distill.zoo import teacher_settings


def atari_env(env_id: str, n_envs: int, seed: int) -> VecFrameStack:
    """RL-Zoo's Atari environment: ``AtariWrapper``, 4 stacked frames."""
    import ale_py

    gym.register_envs(ale_py)
    return VecFrameStack(make_atari_env(env_id, n_envs=n_envs, seed=seed), n_stack=4)


def zoo_ppo_case(env_id: str, student_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A case with the teacher settings of ``hyperparams/ppo.yml``'s entry for ``env_id``, 30k steps."""
    n_envs, kwargs = teacher_settings("ppo", env_id)
    return {
        "algo": PPO,
        "env": env_id,
        "n_envs": n_envs,
        "kwargs": {key: value for key, value in kwargs.items() if key != "policy"},
        "timesteps": 30_000,
        "student_kwargs": student_kwargs,
    }


# Teachers: RL-Zoo's tuned CartPole settings (and SB3's defaults for PPO, whose larger updates make the
# relative overhead smaller), SB3's defaults on MinAtar (flattened 10x10x4 frames).
CASES: dict[str, dict[str, Any]] = {
    "ppo/CartPole-v1": zoo_ppo_case("CartPole-v1", {"net_arch": [8]}),
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
    # hyperparams/ppo.yml's MinAtar entry: Young & Tian's CNN teacher, the entry's 5% MinAtarCNN student; its
    # ladder is three MinAtarCNN students (packed as patch products, see sb3_distill/packing.py).
    "ppo/MinAtar/Breakout-v1/cnn": zoo_ppo_case(
        "MinAtar/Breakout-v1",
        {
            "features_extractor_class": MinAtarCNN,
            "features_extractor_kwargs": {"channels": 6, "features_dim": 16},
            "net_arch": [],
        },
    ),
    # RL-Zoo's Atari PPO settings (hyperparams/ppo.yml) with the 1.7% student; about 400 teacher steps/s on CPU.
    "ppo/PongNoFrameskip-v4": {
        "algo": PPO,
        "env": "PongNoFrameskip-v4",
        "make_env": atari_env,
        "policy": "CnnPolicy",
        "n_envs": 8,
        "kwargs": {
            "n_steps": 128,
            "n_epochs": 4,
            "batch_size": 256,
            "learning_rate": 2.5e-4,
            "clip_range": 0.1,
            "vf_coef": 0.5,
            "ent_coef": 0.01,
        },
        "timesteps": 16_384,
        "student_kwargs": atari_cnn_student(8)[1],
    },
    "dqn/MinAtar/Breakout-v1": {
        "algo": DQN,
        "env": "MinAtar/Breakout-v1",
        "n_envs": 1,
        "kwargs": {"learning_starts": 1000, "buffer_size": 50_000},
        "timesteps": 15_000,
        "student_kwargs": {"net_arch": [16]},
    },
    # A continuous-action replay teacher: SAC's defaults (one gradient step per environment step).
    "sac/Pendulum-v1": {
        "algo": SAC,
        "env": "Pendulum-v1",
        "n_envs": 1,
        "kwargs": {},
        "timesteps": 5_000,
        "student_kwargs": {"net_arch": [16]},
    },
}


VARIANTS = (
    "one",
    "one-foreground",
    "one-4epochs",
    "one-channels-first",
    "ladder",
    "ladder-foreground",
    "ladder-unpacked",
    "ladder-unpacked-foreground",
    "ladder-4epochs",
    "ladder-1epoch",
    "ladder-1epoch-foreground",
    "ladder-thread",
    "one-thread",
    "ladder-process",
    "ladder-4epochs-process",
    "one-process",
)


class UnpackedCallback(RealTimeDistillCallback):
    """The callback with its students run one by one (the distiller's packing switched off)."""

    def _init_callback(self) -> None:
        super()._init_callback()
        assert self.distiller is not None
        self.distiller.packed = None


class ChannelsFirstCallback(RealTimeDistillCallback):
    """The callback with image batches left in their channels-first memory layout (as before it changed it)."""

    def _init_callback(self) -> None:
        super()._init_callback()
        assert self.distiller is not None
        self.distiller.channel_first_images = False


def train(
    case: dict[str, Any], timesteps: int, seed: int, variant: str | None
) -> tuple[float, float, BaseAlgorithm, Any]:
    """:return: wall seconds and CPU seconds (all threads of the process) of ``learn``, the teacher, the callback"""
    make_env = case.get("make_env", make_vec_env)
    env = make_env(case["env"], n_envs=case["n_envs"], seed=seed)
    policy = case.get("policy", "MlpPolicy")
    teacher = case["algo"](policy, env, seed=seed, **case["kwargs"])
    callback = None
    if variant is not None:
        options: dict[str, Any] = {"seed": seed}
        if "-4epochs" in variant:
            options["epochs"] = 4
        if "-1epoch" in variant:
            options["epochs"] = 1
        if variant.endswith("-foreground"):
            options["background"] = False
        if variant.endswith("-process"):
            options["background"] = "process"
        if variant.endswith("-thread"):
            options["background"] = "thread"
        if variant.startswith("ladder"):
            options["student"] = ladder(teacher)
        else:
            options.update(student=policy, student_kwargs=case["student_kwargs"])
        callback_class = {
            "ladder-unpacked": UnpackedCallback,
            "ladder-unpacked-foreground": UnpackedCallback,
            "one-channels-first": ChannelsFirstCallback,
        }.get(variant, RealTimeDistillCallback)
        callback = callback_class(**options)
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    teacher.learn(timesteps, callback=callback)
    return time.perf_counter() - start, _cpu_seconds() - start_cpu, teacher, callback


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its ended children (a worker process joined at the end)."""
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats, half the budgets")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--timesteps", type=int, default=None, help="teacher steps per run (default: the case's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 suits these small networks)")
    parser.add_argument("--name", default=None, help="result file stem (default overhead[_quick])")
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
        timesteps = args.timesteps or int(case["timesteps"] * scale)
        runs: list[str | None] = [None, *args.variants]
        seconds: dict[str, list[float]] = {str(run): [] for run in runs}
        cpu_seconds: dict[str, list[float]] = {str(run): [] for run in runs}
        ratios: dict[str, list[float]] = {run: [] for run in args.variants}
        accounted: dict[str, list[float]] = {run: [] for run in args.variants}
        compressions: dict[str, dict[str, float]] = {}
        for repeat in range(repeats):
            shift = repeat % len(runs)
            elapsed = {}
            for variant in runs[shift:] + runs[:shift]:
                elapsed[variant], cpu, _, callback = train(case, timesteps, seed=repeat, variant=variant)
                seconds[str(variant)].append(elapsed[variant])
                cpu_seconds[str(variant)].append(cpu)
                if callback is not None:
                    assert variant is not None
                    compressions[variant] = dict(callback.distiller.compression)
                    if not callback.background:  # in the background the students' time overlaps the teacher's
                        # From inside the run: wall time / (wall time - time spent distilling).
                        distilling = callback.distiller.total_time_s
                        accounted[variant].append(elapsed[variant] / (elapsed[variant] - distilling))
            for variant in args.variants:
                ratios[variant].append(elapsed[variant] / elapsed[None])
            line = ", ".join(f"{variant} {ratios[variant][-1]:.3f}" for variant in args.variants)
            print(f"{name} repeat {repeat}: alone {elapsed[None]:.2f}s; ratios {line}", flush=True)
        results[name] = {
            "timesteps": timesteps,
            "n_envs": case["n_envs"],
            "teacher_kwargs": dict(case["kwargs"]),
            "student_kwargs": case["student_kwargs"],
            "seeds": list(range(repeats)),
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "compression": compressions,
            "ratios": ratios,
            "median_ratio": {variant: statistics.median(values) for variant, values in ratios.items()},
            # CPU time of the whole process (the background thread's included) and of the worker process (joined
            # when learn ends): what distilling costs in all.
            "median_cpu_ratio": {
                variant: statistics.median(
                    cpu / alone for cpu, alone in zip(cpu_seconds[variant], cpu_seconds["None"], strict=True)
                )
                for variant in args.variants
            },
            "median_accounted_ratio": {
                variant: statistics.median(values) for variant, values in accounted.items() if values
            },
        }
        print(f"{name}: median overhead ratio {results[name]['median_ratio']}", flush=True)

    path = write_result(
        args.name or ("overhead" if not args.quick else "overhead_quick"),
        {
            "benchmark": "overhead",
            "repeats": repeats,
            "torch_threads": args.threads,
            "callback": "RealTimeDistillCallback defaults",
            "cpu_seconds": "this process's and its ended children's (a worker process, joined when learn ends)",
            "variants": {
                "one": "the case's student_kwargs",
                "one-foreground": "the same, background=False (students fitted in the training thread)",
                "ladder-foreground": "the ladder, background=False",
                "one-4epochs": "the same, epochs=4",
                "ladder": "sb3_distill.ladder(teacher): 1.7%, 5%, 25% students",
                "ladder-unpacked": "the same, students run one by one (no packing)",
                "ladder-unpacked-foreground": "the ladder one by one, background=False",
                "ladder-4epochs": "the same, epochs=4",
                "ladder-1epoch": "the ladder, epochs=1",
                "ladder-1epoch-foreground": "the ladder, epochs=1, background=False",
                "ladder-4epochs-process": "the ladder, epochs=4, background='process'",
                "ladder-thread": "the ladder, background='thread' (the default before it forked a process on Linux)",
                "one-thread": "one student, background='thread'",
                "ladder-process": "the ladder, background='process' (fitted in a second process)",
                "one-process": "one student, background='process'",
                "one-channels-first": "one, image batches left channels-first in memory",
            },
            "cases": results,
        },
    )
    print(f"\nwritten {path}")
    for name, result in results.items():
        medians = ", ".join(f"{variant} {value:.3f}" for variant, value in result["median_ratio"].items())
        print(f"  {name:<28} median wall-time ratio: {medians}")


if __name__ == "__main__":
    main()
