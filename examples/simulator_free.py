"""Simulator-free distillation: a student learns from the teacher alone, with no environment.

A generator proposes observations (adversarially: where student and teacher disagree; per action:
exemplars the teacher assigns to each action; re-initialised often: many exemplars, not one prototype).
The environment is used only to train the teacher first, and at the end to check the student.

    python examples/simulator_free.py             # CartPole-v1, about a minute on CPU
"""

from __future__ import annotations

import argparse
import os

from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import distill_datafree, save_student
from sb3_distill.evaluation import trajectory_agreement
from sb3_distill.zoo import teacher_settings

ENV = "CartPole-v1"
#: CartPole's velocities are unbounded: the range to generate in (positions within the termination limits).
BOUNDS = ([-2.4, -3.0, -0.21, -3.5], [2.4, 3.0, 0.21, 3.5])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=30_000, help="teacher training budget")
    parser.add_argument("--iterations", type=int, default=1000, help="generator and student steps")
    parser.add_argument("--n-eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/datafree", help="folder for the teacher and the student")
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)

    # RL-Zoo's tuned PPO settings for CartPole-v1, from this package's hyperparams/ppo.yml.
    n_envs, settings = teacher_settings("ppo", ENV)
    print(f"PPO teacher, {n_envs} environments: {settings}")
    teacher = PPO(env=make_vec_env(ENV, n_envs=n_envs, seed=args.seed), seed=args.seed, **settings)
    teacher.learn(args.timesteps)
    teacher.save(os.path.join(args.output, "teacher.zip"))

    # From here on, only the teacher's file: no environment, no stored trajectories.
    student = distill_datafree(
        os.path.join(args.output, "teacher.zip"),
        "MlpPolicy",
        args.iterations,
        student_kwargs={"net_arch": [8]},
        obs_bounds=BOUNDS,
        seed=args.seed,
        verbose=0,
    )
    save_student(student, os.path.join(args.output, "student.zip"))

    # The real environment again, only to check.
    env = make_vec_env(ENV, seed=1000 + args.seed)
    for name, policy in (("teacher", teacher), ("student", student)):
        mean, _ = evaluate_policy(policy, env, n_eval_episodes=args.n_eval_episodes)
        print(f"{name}: mean return {mean:.1f} over {args.n_eval_episodes} episodes")
    print(f"agreement on the teacher's states: {trajectory_agreement(teacher, student, env, n_steps=2000):.3f}")


if __name__ == "__main__":
    main()
