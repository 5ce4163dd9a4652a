"""Real-time distillation, the main job: PPO learns CartPole-v1 while a ~2% student is distilled alongside.

Run with ``make demo`` (or ``python examples/realtime_ppo_cartpole.py``); ``--timesteps`` sets the budget.
"""

from __future__ import annotations

import argparse
import os
import time

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_distill import RealTimeDistillCallback, load_student, save_student
from sb3_distill.evaluation import compare_returns, trajectory_agreement
from sb3_distill.zoo import teacher_settings


class ProgressLine(BaseCallback):
    """Prints one line every ``every`` timesteps: teacher return, student agreement and loss."""

    def __init__(self, distill: RealTimeDistillCallback, total: int, every: int = 10_000) -> None:
        super().__init__()
        self.distill, self.total, self.every, self.next_print = distill, total, every, every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_print:
            self.next_print += self.every
            # the last distillation's metrics (the logger's own values are cleared each time PPO dumps them)
            last = self.distill.last_metrics
            values = last["students"]["student"] if last is not None else {}
            episodes = [info["r"] for info in self.model.ep_info_buffer]
            mean_return = sum(episodes) / len(episodes) if episodes else float("nan")
            print(
                f"  {self.num_timesteps:>7}/{self.total} steps | teacher return {mean_return:6.1f} | "
                f"student agreement {values.get('agreement', float('nan')):.3f} | "
                f"distill loss {values.get('loss', float('nan')):.4f}",
                flush=True,
            )
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, default=100_000, help="teacher training budget")
    parser.add_argument("--student-hidden", type=int, default=12, help="hidden units of the student's one layer")
    parser.add_argument("--n-eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/demo", help="folder for the teacher and the student")
    args = parser.parse_args()

    os.makedirs(args.output, exist_ok=True)
    # RL-Zoo's tuned PPO settings for CartPole-v1, from this package's hyperparams/ppo.yml.
    n_envs, settings = teacher_settings("ppo", "CartPole-v1")
    print(f"PPO teacher, {n_envs} environments: {settings}")
    teacher = PPO(env=make_vec_env("CartPole-v1", n_envs=n_envs, seed=args.seed), seed=args.seed, **settings)
    distill = RealTimeDistillCallback(
        student="MlpPolicy", student_kwargs={"net_arch": [args.student_hidden]}, seed=args.seed, verbose=1
    )
    print(f"PPO learns CartPole-v1 for {args.timesteps} steps; the student is distilled after every rollout.")
    start = time.perf_counter()
    teacher.learn(args.timesteps, callback=[distill, ProgressLine(distill, args.timesteps)])
    wall_time = time.perf_counter() - start

    student_path = os.path.join(args.output, "student.zip")
    teacher.save(os.path.join(args.output, "teacher.zip"))
    save_student(distill.student, student_path)
    student = load_student(student_path)  # what a user deploys: the student alone

    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1000 + args.seed)
    returns = compare_returns(teacher, student, eval_env, n_eval_episodes=args.n_eval_episodes, seed=1000 + args.seed)
    agreement = trajectory_agreement(teacher, student, eval_env, n_steps=2000)
    assert distill.distiller is not None
    rows = [
        ("teacher mean return", f"{returns['teacher_mean']:.1f} ± {returns['teacher_std']:.1f}"),
        ("student mean return", f"{returns['student_mean']:.1f} ± {returns['student_std']:.1f}"),
        ("random policy mean return", f"{returns['random_mean']:.1f}"),
        ("normalised return", f"{returns['ratio']:.3f}  (1 = teacher, 0 = random)"),
        ("action agreement", f"{agreement:.3f}  (student vs teacher, teacher's greedy trajectories)"),
        ("compression", f"{distill.distiller.compression['student']:.2%}  (student / teacher acting parameters)"),
        (
            "wall time",
            f"{wall_time:.1f} s  (teacher training; the students' updates took {distill.distiller.total_time_s:.1f} s, "
            "beside it)",
        ),
        ("student saved to", student_path),
    ]
    print(f"\nEvaluation over {args.n_eval_episodes} episodes, same seeds for both:")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
