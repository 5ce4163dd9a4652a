"""Offline distillation from a saved agent, then fine-tuning the student with PPO.

1. A DQN teacher is trained and saved (any saved SB3 zip works: an RL-Zoo model, say).
2. ``distill`` loads it and distils a tiny PPO-style student with student-driven collection (the
   student acts, the teacher labels what it sees: the student learns to recover from its own mistakes).
3. ``to_ppo`` turns the student into a PPO model that keeps training on the environment's reward.

    python examples/offline_then_finetune.py              # CartPole-v1, about 2 minutes on CPU
"""

from __future__ import annotations

import argparse
import os

from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import distill, save_student, to_ppo

ENV = "CartPole-v1"


def mean_return(policy, episodes: int, seed: int) -> float:
    return float(evaluate_policy(policy, make_vec_env(ENV, seed=seed), n_eval_episodes=episodes)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--timesteps", type=int, default=30_000, help="teacher budget; distillation and fine-tuning take a third each"
    )
    parser.add_argument("--n-eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", default="runs/offline", help="folder for the teacher, the student and the PPO model"
    )
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)

    # 1. A teacher, saved as a plain SB3 zip (RL-Zoo's CartPole DQN settings).
    teacher = DQN(
        "MlpPolicy",
        make_vec_env(ENV, seed=args.seed),
        learning_rate=2.3e-3,
        batch_size=64,
        learning_starts=min(1_000, args.timesteps // 10),
        target_update_interval=10,
        train_freq=256,
        gradient_steps=128,
        exploration_fraction=0.16,
        exploration_final_eps=0.04,
        policy_kwargs={"net_arch": [256, 256]},
        seed=args.seed,
    )
    teacher.learn(args.timesteps)
    teacher_path = os.path.join(args.output, "teacher.zip")
    teacher.save(teacher_path)

    # 2. From the zip alone: a PPO-style student (actor-critic), the student driving the collection.
    student = distill(
        teacher_path,
        "stable_baselines3.common.policies.ActorCriticPolicy",
        make_vec_env(ENV, n_envs=4, seed=args.seed + 1),
        n_steps=max(args.timesteps // 3, 512),
        collect="student",
        student_kwargs={"net_arch": [16]},
        seed=args.seed,
    )
    save_student(student, os.path.join(args.output, "student.zip"))

    # 3. Fine-tune with PPO: the student's weights, SB3's PPO, the environment's reward.
    model = to_ppo(
        student, make_vec_env(ENV, n_envs=4, seed=args.seed + 2), n_steps=128, learning_rate=3e-4, seed=args.seed
    )
    before = mean_return(model.policy, args.n_eval_episodes, 1000 + args.seed)
    model.learn(max(args.timesteps // 3, 512))
    model.save(os.path.join(args.output, "student_ppo.zip"))

    for name, policy in (("teacher", teacher), ("student", student)):
        print(f"{name:<26} mean return {mean_return(policy, args.n_eval_episodes, 1000 + args.seed):7.1f}")
    print(f"{'student as PPO, before':<26} mean return {before:7.1f}")
    after = mean_return(model, args.n_eval_episodes, 1000 + args.seed)
    print(f"{'student as PPO, fine-tuned':<26} mean return {after:7.1f}")


if __name__ == "__main__":
    main()
