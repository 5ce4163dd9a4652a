"""The students' update alone, packed (:mod:`sb3_distill.packing`) against one by one, on the same rollout.

For each case of ``benchmarks/overhead.py``, the teacher trains for two rollouts with a ladder (1.7%, 5%, 25%
students, ``background=False``); the distiller then fits its students on the last rollout, labelled once,
alternately packed and one by one (the same students and targets; ``--alternations`` of each, the order
flipped every time). The figure is the median CPU time of one fit (one torch thread) and the ratio of the
medians, packed / one by one. End-to-end figures (the teacher's training with and without the callback) are
``overhead.py``'s ``ladder`` and ``ladder-unpacked`` variants. Writes ``benchmarks/results/packing.json``.

    python benchmarks/packing.py                                       # MLP and MinAtar CNN ladders
    python benchmarks/packing.py --cases ppo/MinAtar/Breakout-v1/cnn --alternations 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.env_util import make_vec_env

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import write_result
from overhead import CASES

from sb3_distill import RealTimeDistillCallback, ladder

DEFAULT_CASES = ("ppo/CartPole-v1", "ppo/MinAtar/Breakout-v1", "ppo/MinAtar/Breakout-v1/cnn", "dqn/MinAtar/Breakout-v1")


def measure(case: dict[str, Any], alternations: int) -> dict[str, Any]:
    """:return: CPU seconds of each fit, packed and one by one, and the students' sizes"""
    env = make_vec_env(case["env"], n_envs=case["n_envs"], seed=0)
    teacher = case["algo"](case.get("policy", "MlpPolicy"), env, seed=0, **case["kwargs"])
    callback = RealTimeDistillCallback(student=ladder(teacher), seed=0, background=False)
    on_policy = hasattr(teacher, "rollout_buffer")
    teacher.learn(2 * teacher.n_envs * teacher.n_steps if on_policy else 3000, callback=callback)
    distiller = callback.distiller
    assert distiller is not None
    packed = distiller.packed
    if packed is None:
        raise SystemExit(f"the ladder of {case['env']} does not pack: nothing to compare")
    if on_policy:
        obs = th.as_tensor(teacher.rollout_buffer.observations.reshape(-1, *teacher.observation_space.shape))
    else:  # off-policy: the replay buffer's last 1,024 observations, fitted as one rollout would be
        position = teacher.replay_buffer.pos
        obs = th.as_tensor(teacher.replay_buffer.observations[max(0, position - 1024) : position, 0])
    obs, targets = distiller.label(obs)
    seconds: dict[str, list[float]] = {"packed": [], "one_by_one": []}
    for alternation in range(alternations):
        order = ("packed", "one_by_one") if alternation % 2 == 0 else ("one_by_one", "packed")
        for variant in order:
            distiller.packed = packed if variant == "packed" else None
            start = time.process_time()
            distiller.fit(obs, targets)
            seconds[variant].append(time.process_time() - start)
    distiller.packed = packed
    medians = {variant: statistics.median(values) for variant, values in seconds.items()}
    return {
        "observations": len(obs),
        "epochs": distiller.config.epochs,
        "batch_size": distiller.config.batch_size,
        "student_parameters": dict(distiller.student_parameters),
        "cpu_seconds": seconds,
        "median_cpu_seconds": medians,
        "ratio": medians["packed"] / medians["one_by_one"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES), choices=list(CASES))
    parser.add_argument("--alternations", type=int, default=16)
    parser.add_argument("--name", default="packing", help="result file stem")
    args = parser.parse_args()
    th.set_num_threads(1)
    if any("MinAtar" in case for case in args.cases) and "MinAtar/Breakout-v1" not in gym.registry:
        import minatar.gym

        minatar.gym.register_envs()
    results = {}
    for name in args.cases:
        results[name] = measure(CASES[name], args.alternations)
        medians = results[name]["median_cpu_seconds"]
        print(
            f"{name}: packed {medians['packed'] * 1e3:.1f} ms, one by one {medians['one_by_one'] * 1e3:.1f} ms, "
            f"ratio {results[name]['ratio']:.3f}",
            flush=True,
        )
    path = write_result(
        args.name,
        {"benchmark": "packing", "alternations": args.alternations, "torch_threads": 1, "cases": results},
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
