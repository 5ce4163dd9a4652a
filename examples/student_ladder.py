"""How small can the student be? Three students distilled from one teacher run, and their plot.

``ladder(teacher, ratios)`` builds one student per target share of the teacher's acting parameters;
the callback distils all of them from the same rollouts.

    python examples/student_ladder.py                       # CartPole-v1: 1.7%, 5%, 25% students
    python examples/student_ladder.py --ratios 0.005 0.01 0.02 0.05
"""

from __future__ import annotations

import argparse
import os

from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import RealTimeDistillCallback, ladder
from sb3_distill.serialization import atomic_write_bytes
from sb3_distill.zoo import teacher_settings

ENV = "CartPole-v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000, help="teacher training budget")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.017, 0.05, 0.25])
    parser.add_argument("--n-eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/ladder", help="folder for the students and the plot")
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)

    # RL-Zoo's tuned PPO settings for CartPole-v1, from this package's hyperparams/ppo.yml.
    n_envs, settings = teacher_settings("ppo", ENV)
    print(f"PPO teacher, {n_envs} environments: {settings}")
    teacher = PPO(env=make_vec_env(ENV, n_envs=n_envs, seed=args.seed), seed=args.seed, **settings)
    rungs = ladder(teacher, args.ratios)
    print(rungs.describe())
    distill = RealTimeDistillCallback(student=rungs, save_path=args.output, name_prefix="student")
    teacher.learn(args.timesteps, callback=distill)

    env = make_vec_env(ENV, seed=1000 + args.seed)
    teacher_return = float(evaluate_policy(teacher, env, n_eval_episodes=args.n_eval_episodes)[0])
    print(f"teacher: mean return {teacher_return:.1f}")
    returns = {}
    for name, student in distill.students.items():
        returns[name] = float(evaluate_policy(student, env, n_eval_episodes=args.n_eval_episodes)[0])
        print(f"student {name} ({rungs.compression[name]:.2%}): mean return {returns[name]:.1f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot([rungs.compression[n] for n in returns], [r / teacher_return for r in returns.values()], marker="o")
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("student / teacher acting parameters")
    axis.set_ylabel("student / teacher return")
    axis.set_title(f"{ENV}, one teacher run")
    figure.tight_layout()
    path = os.path.join(args.output, "ladder.png")
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(buffer.getvalue(), path)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
