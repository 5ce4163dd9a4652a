"""PPO teachers on MinAtar: network and settings variants, to find settings that learn.

``hyperparams/ppo.yml``'s first MinAtar entries were the Atari settings with an MLP torso, untuned: at 2M
steps they reached 6.1 on Breakout and only about 1.5 on Asterix and Seaquest. Each variant here sets the
network, the clip range and the learning rate explicitly (the other settings are the file's); the teacher
trains alone (no distillation), is evaluated greedily every ``--timesteps / --checkpoints`` steps (off the
clock), and the result file is rewritten after every evaluation, so a run stopped early keeps what it
reached. One file per game, variant and seed, merged by name:
``benchmarks/results/minatar_teachers_<game>_<variant>_<seed>.json``.

    python benchmarks/minatar_teachers.py --env MinAtar/Asterix-v1 --variant cnn-clip --timesteps 1000000

Variants: ``atari-mlp`` (the file's first settings: a ``[256, 256]`` MLP, Atari's schedules ``lin_2.5e-4``
and ``lin_0.1``), ``cnn`` (Young & Tian's torso, one 3x3 convolution with 16 channels and a 128-unit layer,
:class:`~sb3_distill.students.MinAtarCNN`, with Atari's schedules), ``clip`` (the MLP with PPO's usual
constant clip range 0.2 and learning rate 5e-4), ``cnn-clip`` (both: the file's entries since), ``entry``
(the file as it is).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch as th
from common import Clock, evaluation_env, write_result, zoo_teacher
from rl_zoo3.utils import linear_schedule
from stable_baselines3.common.callbacks import BaseCallback

from sb3_distill.students import MinAtarCNN

CNN_TORSO = {
    "features_extractor_class": MinAtarCNN,
    "features_extractor_kwargs": {"channels": 16, "features_dim": 128},
    "net_arch": [],
}
MLP_TORSO = {"net_arch": [256, 256]}
ATARI_SCHEDULES = {"learning_rate": linear_schedule(2.5e-4), "clip_range": linear_schedule(0.1)}
CONSTANT = {"learning_rate": 5e-4, "clip_range": 0.2}
#: variant -> (what it sets, in words; the model arguments it sets)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "atari-mlp": ("[256, 256] MLP, lin_2.5e-4, lin_0.1", {"policy_kwargs": MLP_TORSO, **ATARI_SCHEDULES}),
    "cnn": ("MinAtarCNN(16, 128), lin_2.5e-4, lin_0.1", {"policy_kwargs": CNN_TORSO, **ATARI_SCHEDULES}),
    "clip": ("[256, 256] MLP, 5e-4, 0.2", {"policy_kwargs": MLP_TORSO, **CONSTANT}),
    "cnn-clip": ("MinAtarCNN(16, 128), 5e-4, 0.2", {"policy_kwargs": CNN_TORSO, **CONSTANT}),
    "entry": ("hyperparams/ppo.yml as it is", {}),
}


class Checkpoints(BaseCallback):
    """Evaluate the teacher every ``every`` steps, off the clock, and rewrite the result file."""

    def __init__(self, result: dict[str, Any], name: str, clock: Clock, env: Any, every: int, episodes: int) -> None:
        super().__init__()
        self.result, self.name, self.clock, self.env = result, name, clock, env
        self.every, self.episodes, self.next_at = every, episodes, every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.next_at += self.every
            point = {"steps": self.num_timesteps, "seconds": self.clock.now()}
            point["return"] = self.clock.evaluate(self.model, self.env, self.episodes)
            self.result["curve"].append(point)
            self.result["teacher_steps_done"] = self.num_timesteps
            print(point, flush=True)
            write_result(self.name, self.result)
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="MinAtar/Asterix-v1")
    parser.add_argument("--variant", default="entry", choices=list(VARIANTS))
    parser.add_argument("--timesteps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    game = args.env.split("/")[1].split("-")[0].lower()
    name = f"minatar_teachers_{game}_{args.variant}_{args.seed}"
    description, settings = VARIANTS[args.variant]
    teacher, _ = zoo_teacher("ppo", args.env, args.seed, overrides=settings)
    result: dict[str, Any] = {
        "benchmark": "minatar_teachers",
        "env": args.env,
        "variant": args.variant,
        "settings": description,
        "seed": args.seed,
        "teacher_steps": args.timesteps,
        "teacher_steps_done": 0,
        "parameters": sum(p.numel() for p in teacher.policy.parameters()),
        "eval_episodes": args.episodes,
        "curve": [],
    }
    clock = Clock()
    env = evaluation_env("ppo", args.env, teacher)
    every = args.timesteps // args.checkpoints
    teacher.learn(args.timesteps, callback=Checkpoints(result, name, clock, env, every, args.episodes))
    result["seconds"] = clock.now()
    result["completed"] = True
    print(write_result(name, result), flush=True)


if __name__ == "__main__":
    main()
