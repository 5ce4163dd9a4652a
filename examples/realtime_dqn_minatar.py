"""Real-time distillation of a DQN teacher on a MinAtar game into a small CNN student.

    python examples/realtime_dqn_minatar.py                       # MinAtar Breakout, 300k steps (about 10 min on CPU)
    python examples/realtime_dqn_minatar.py --game Asterix --timesteps 1000000

The teacher is an MLP over the 10x10xC frames ([256, 256], the hyperparams/dqn.yml MinAtar entry); the
student is the MinAtar CNN at about 5% of its acting parameters.
"""

from __future__ import annotations

import argparse
import os

import gymnasium as gym
import minatar.gym
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import RealTimeDistillCallback
from sb3_distill.students import minatar_cnn_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="Breakout", help="Asterix, Breakout, Freeway, Seaquest or SpaceInvaders")
    parser.add_argument("--timesteps", type=int, default=300_000, help="teacher training budget")
    parser.add_argument("--n-eval-episodes", type=int, default=20, help="0: no evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/dqn_minatar", help="folder for the teacher and the student")
    args = parser.parse_args()

    minatar.gym.register_envs()
    env_id = f"MinAtar/{args.game}-v1"
    if env_id not in gym.registry:
        parser.error(f"unknown MinAtar game {args.game!r}")
    os.makedirs(args.output, exist_ok=True)
    teacher = DQN(
        "MlpPolicy",
        make_vec_env(env_id, seed=args.seed),
        buffer_size=100_000,
        learning_rate=1e-4,
        batch_size=32,
        learning_starts=min(5_000, args.timesteps // 10),
        target_update_interval=1_000,
        exploration_fraction=0.1,
        exploration_final_eps=0.01,
        policy_kwargs={"net_arch": [256, 256]},
        seed=args.seed,
    )
    alias, student_kwargs = minatar_cnn_student(width=8)
    distill = RealTimeDistillCallback(student=alias, student_kwargs=student_kwargs, save_path=args.output, verbose=1)
    teacher.learn(args.timesteps, callback=distill)
    teacher.save(os.path.join(args.output, "teacher.zip"))

    eval_env = make_vec_env(env_id, seed=1000 + args.seed)
    for name, policy in (("teacher", teacher), ("student", distill.student)) if args.n_eval_episodes else ():
        mean, std = evaluate_policy(policy, eval_env, n_eval_episodes=args.n_eval_episodes)
        print(f"{name}: mean return {mean:.2f} ± {std:.2f} over {args.n_eval_episodes} episodes")
    print(f"compression: {distill.distiller.compression['student']:.2%} of the teacher's acting parameters")


if __name__ == "__main__":
    main()
