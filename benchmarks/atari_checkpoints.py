"""One Atari teacher trained with its entry's student distilled alongside, evaluated at checkpoints.

The long run of the Atari case, on CPU or GPU (``benchmarks/atari.py`` also trains each teacher alone, for
the overhead): PPO with ``hyperparams/ppo.yml``'s settings for the game (RL-Zoo's Atari block: Nature CNN,
8 environments, 4 stacked 84x84 frames) and the entry's own ``RealTimeDistillCallback`` (one ``SmallCNN``
student at about 1.7% of the teacher's acting parameters). Every ``--checkpoints``-th of the run, teacher
and student are evaluated greedily on the same episodes, off the clock, and the result file is rewritten,
so a run stopped early keeps every checkpoint it reached (``"completed": false``). ``--max-seconds`` ends
the training early, on a wall-clock budget, and still evaluates the final teacher and student; the
schedules stay those of ``--timesteps`` (a budget's run is the start of the full one).

    nohup python benchmarks/atari_checkpoints.py --env PongNoFrameskip-v4 --timesteps 2000000 --threads 1 &
    python benchmarks/atari_checkpoints.py --env BreakoutNoFrameskip-v4 --timesteps 10000000 \
        --vec-env subproc --max-seconds 3600 --checkpoint-steps 250000        # on a GPU

PPO on Pong takes about 250-400 teacher steps/s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch as th
from common import EVAL_SEED, Clock, RandomPolicy, evaluation_env, write_result, zoo_teacher
from stable_baselines3.common.callbacks import BaseCallback
from students_vs_teacher import Curves

from sb3_distill import RealTimeDistillCallback
from sb3_distill.evaluation import trajectory_agreement


class Checkpoints(Curves):
    """:class:`Curves`, writing the result file after every evaluation."""

    def __init__(self, result: dict[str, Any], name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result, self.name = result, name

    def _on_step(self) -> bool:
        evaluated = len(self.points)
        super()._on_step()
        if len(self.points) > evaluated:
            point = self.points[-1]
            print(f"{point['steps']} steps, {point['seconds']:.0f} s: {point}", flush=True)
            self.result["teacher_steps_done"] = self.num_timesteps
            self.result["seconds"] = self.clock.now()
            write_result(self.name, self.result)
        return True


class WallClockBudget(BaseCallback):
    """Ends the training once ``seconds`` of wall time (evaluations included) have passed."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        self.seconds = seconds
        self.start = time.perf_counter()
        self.stopped = False

    def _on_step(self) -> bool:
        self.stopped = self.seconds is not None and time.perf_counter() - self.start > self.seconds
        return not self.stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="PongNoFrameskip-v4")
    parser.add_argument("--timesteps", type=int, default=2_000_000, help="teacher steps (the schedules' horizon)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", type=int, default=10, help="evaluations over --timesteps")
    parser.add_argument("--checkpoint-steps", type=int, default=None, help="teacher steps between evaluations")
    parser.add_argument("--max-seconds", type=float, default=None, help="wall-clock budget for the training")
    parser.add_argument("--vec-env", default="dummy", choices=["dummy", "subproc"], help="RL-Zoo's --vec-env")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per checkpoint evaluation")
    parser.add_argument("--final-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--name", default=None, help="result file stem (default atari_<cpu|gpu>_<game>)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    where = "gpu" if th.cuda.is_available() else "cpu"
    name = args.name or f"atari_{where}_" + args.env.split("NoFrameskip")[0].lower()
    teacher, options = zoo_teacher("ppo", args.env, args.seed, vec_env_type=args.vec_env)
    distill = RealTimeDistillCallback(**{**options, "seed": args.seed})
    result: dict[str, Any] = {
        "benchmark": "atari_checkpoints",
        "algo": "ppo",
        "env": args.env,
        "seed": args.seed,
        "teacher_steps": args.timesteps,
        "teacher_steps_done": 0,
        "completed": False,
        "max_seconds": args.max_seconds,
        "vec_env": args.vec_env,
        "device": str(teacher.device),
        "distill_options": repr(options),
        "eval_episodes": args.eval_episodes,
    }
    clock = Clock()
    eval_env = evaluation_env("ppo", args.env, teacher)
    every = args.checkpoint_steps or max(args.timesteps // args.checkpoints, 1)
    checkpoints = Checkpoints(result, name, distill, clock, eval_env, every, args.eval_episodes)
    result["curve"] = checkpoints.points
    budget = WallClockBudget(args.max_seconds)
    teacher.learn(args.timesteps, callback=[distill, checkpoints, budget])
    result["seconds"] = clock.now()
    result["distill_seconds"] = distill.distiller.total_time_s
    result["teacher_steps_done"] = teacher.num_timesteps
    student = next(iter(distill.students.values()))
    result["compression"] = next(iter(distill.distiller.compression.values()))
    result["teacher_return"] = clock.evaluate(teacher, eval_env, args.final_episodes, seed=EVAL_SEED)
    result["student_return"] = clock.evaluate(student, eval_env, args.final_episodes, seed=EVAL_SEED)
    result["random_return"] = clock.evaluate(RandomPolicy(teacher.action_space, args.seed), eval_env, 3, seed=EVAL_SEED)
    span = result["teacher_return"] - result["random_return"]
    result["normalized"] = (result["student_return"] - result["random_return"]) / span if span > 0 else None
    result["agreement"] = trajectory_agreement(teacher, student, evaluation_env("ppo", args.env, teacher), n_steps=2000)
    result["completed"] = not budget.stopped
    result["stopped_by_budget"] = budget.stopped
    path = write_result(name, result)
    print(
        f"teacher {result['teacher_return']:.1f}, student {result['student_return']:.1f} "
        f"({result['compression']:.2%}), agreement {result['agreement']:.2f}; {path}",
        flush=True,
    )


if __name__ == "__main__":
    main()
