"""Real-time distillation on Atari: PPO (Nature CNN) with a student of 1.7% of its acting parameters.

Sized for a GPU: the default 10M steps take several hours on one GPU (on CPU, PPO on Pong runs at about
400 steps/s; use ``--timesteps`` for a short look).

    python examples/realtime_ppo_atari.py --env PongNoFrameskip-v4 --timesteps 10000000
"""

from __future__ import annotations

import argparse
import os

import ale_py
import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecFrameStack

from sb3_distill import RealTimeDistillCallback
from sb3_distill.students import atari_cnn_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="PongNoFrameskip-v4")
    parser.add_argument("--timesteps", type=int, default=10_000_000, help="teacher training budget")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--n-eval-episodes", type=int, default=10, help="0: no evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/ppo_atari", help="folder for the teacher and the student")
    args = parser.parse_args()

    gym.register_envs(ale_py)
    os.makedirs(args.output, exist_ok=True)
    env = VecFrameStack(make_atari_env(args.env, n_envs=args.n_envs, seed=args.seed), n_stack=4)

    def linear(start: float):
        return lambda progress: start * progress

    # RL-Zoo's PPO Atari settings.
    teacher = PPO(
        "CnnPolicy",
        env,
        n_steps=128,
        n_epochs=4,
        batch_size=256,
        learning_rate=linear(2.5e-4),
        clip_range=linear(0.1),
        vf_coef=0.5,
        ent_coef=0.01,
        seed=args.seed,
    )
    alias, student_kwargs = atari_cnn_student(width=8)  # SmallCNN: 1.69% of the Nature-CNN actor
    distill = RealTimeDistillCallback(student=alias, student_kwargs=student_kwargs, save_path=args.output, verbose=1)
    teacher.learn(args.timesteps, callback=distill)
    teacher.save(os.path.join(args.output, "teacher.zip"))

    eval_env = VecFrameStack(make_atari_env(args.env, n_envs=1, seed=1000 + args.seed), n_stack=4)
    for name, policy in (("teacher", teacher), ("student", distill.student)) if args.n_eval_episodes else ():
        mean, std = evaluate_policy(policy, eval_env, n_eval_episodes=args.n_eval_episodes)
        print(f"{name}: mean return {mean:.2f} ± {std:.2f} over {args.n_eval_episodes} episodes")
    print(f"compression: {distill.distiller.compression['student']:.2%} of the teacher's acting parameters")


if __name__ == "__main__":
    main()
