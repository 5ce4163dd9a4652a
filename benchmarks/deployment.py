"""Where students are deployed: CPU latency at batch 1 (one thread) and ONNX file size, teacher against students.

For each task, the teacher's architecture (RL-Zoo's published agents where there is one, else the
hyperparameter files' settings: the MinAtar teachers are ``hyperparams/ppo.yml``'s ``MinAtarCNN``) and
its ladder of students (1.7%, 5%, 25% of its acting parameters, :func:`sb3_distill.ladder`). Latency and
size depend on the architecture, not on the weights, so untrained networks of the same shape stand in where
no trained one is at hand (the record says which).

Per network: ``predict(obs, deterministic=True)`` (what SB3 users call) and the exported ONNX file run by
onnxruntime (``sb3_distill.export``, one intra-op thread), median over ``--calls`` single observations;
the ONNX file's size. Results: ``benchmarks/results/deployment.json``.

    python benchmarks/deployment.py
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from common import write_result, zoo_teacher
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack

import sb3_distill.envs  # noqa: F401  (registers MinAtar)
from sb3_distill import export, ladder, load_teacher
from sb3_distill.outputs import count_acting_parameters
from sb3_distill.students import make_students, student_specs

ZOO = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "zoo-agents"


def cartpole_ppo() -> tuple[Any, Any, str]:
    return load_teacher(ZOO / "ppo" / "CartPole-v1_1", device="cpu"), make_vec_env("CartPole-v1"), "published"


def cartpole_dqn() -> tuple[Any, Any, str]:
    return load_teacher(ZOO / "dqn" / "CartPole-v1_1", device="cpu"), make_vec_env("CartPole-v1"), "published"


def from_hyperparameters(algo: str, env_id: str) -> Callable[[], tuple[Any, Any, str]]:
    """The teacher of ``hyperparams/<algo>.yml``'s entry for ``env_id`` (untrained: its shape is what counts)."""

    def make() -> tuple[Any, Any, str]:
        teacher, _ = zoo_teacher(algo, env_id, seed=0)
        return teacher, teacher.get_env(), "untrained, hyperparams/" + algo + ".yml"

    return make


def atari_ppo() -> tuple[Any, Any, str]:
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0), n_stack=4)
    return PPO("CnnPolicy", env, device="cpu"), env, "untrained"


CASES = {
    "ppo/CartPole-v1": cartpole_ppo,
    "dqn/CartPole-v1": cartpole_dqn,
    "ppo/PongNoFrameskip-v4": atari_ppo,
    **{
        f"{algo}/{env_id}": from_hyperparameters(algo, env_id)
        for algo, env_id in [
            ("ppo", "Acrobot-v1"),
            *[
                ("ppo", f"MinAtar/{game}-v1")
                for game in ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
            ],
            ("dqn", "MinAtar/Breakout-v1"),
        ]
    },
}


def predict_latency(policy: Any, obs: np.ndarray, calls: int) -> float:
    for _ in range(20):
        policy.predict(obs, deterministic=True)
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        policy.predict(obs, deterministic=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


def onnx_latency_and_size(
    policy: Any, obs: np.ndarray, calls: int, folder: pathlib.Path, name: str
) -> tuple[float, int]:
    import onnxruntime

    path = export(policy, folder / f"{name}.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = {"obs": obs}
    for _ in range(20):
        session.run(None, inputs)
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        session.run(None, inputs)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6, path.stat().st_size


def run(case: str, calls: int) -> dict[str, Any]:
    teacher, env, weights = CASES[case]()
    obs = env.reset()[:1]  # one observation
    policies = {"teacher": teacher.policy}
    students = make_students(
        student_specs(dict(ladder(teacher)), None),
        teacher.policy.observation_space,
        teacher.action_space,
        teacher.policy_aliases,
        learning_rate=1e-3,
        seed=0,
        device="cpu",
        teacher_policy=teacher.policy,
    )
    policies.update(students)
    teacher_parameters = count_acting_parameters(teacher.policy)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, policy in policies.items():
            policy.set_training_mode(False)
            onnx_us, size = onnx_latency_and_size(policy, obs, calls, pathlib.Path(folder), name)
            rows[name] = {
                "acting_parameters": count_acting_parameters(policy),
                "share": count_acting_parameters(policy) / teacher_parameters,
                "predict_us": predict_latency(policy, obs, calls),
                "onnx_us": onnx_us,
                "onnx_bytes": size,
            }
            print(
                case, name, {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[name].items()}, flush=True
            )
    return {"weights": weights, "observation_shape": list(obs.shape[1:]), "policies": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    th.set_num_threads(1)
    results = {case: run(case, args.calls) for case in args.cases}
    write_result("deployment", {"benchmark": "deployment", "calls": args.calls, "torch_threads": 1, "results": results})


if __name__ == "__main__":
    main()
