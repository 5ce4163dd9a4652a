"""The student ladder on Atari, sized for one GPU: ``students_vs_teacher.py`` on the games of ``hyperparams/ppo.yml``.

Each game's teacher (RL-Zoo's PPO Atari settings: Nature CNN, 8 environments, 4 stacked 84x84 frames)
trains alone, then again with a ladder of three ``SmallCNN`` students (about 1.7%, 5% and 25% of its
acting parameters) distilled in real time; the JSON, markdown table and plots are those of
``students_vs_teacher.py``, under ``benchmarks/results/atari*``.

    python benchmarks/atari.py                                   # Pong and Breakout, 2M steps, 1 seed
    python benchmarks/atari.py --envs SeaquestNoFrameskip-v4 --timesteps 10000000 --seeds 3

One game at 2M steps takes about an hour on one GPU with a few CPU cores (PPO's environment stepping
runs on the CPU, at roughly 1,000-2,000 steps/s; each game trains its teacher twice). On a CPU-only
machine use ``--timesteps 2000`` for a smoke test only.
"""

from __future__ import annotations

import argparse

from students_vs_teacher import Job, benchmark

from sb3_distill.zoo import hyperparams_file, load_hyperparams


def atari_games() -> list[str]:
    """The Atari games that ``hyperparams/ppo.yml`` names."""
    return [key for key in load_hyperparams(hyperparams_file("ppo")) if key.endswith("NoFrameskip-v4")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=["PongNoFrameskip-v4", "BreakoutNoFrameskip-v4"])
    parser.add_argument("--algos", nargs="*", default=["ppo"], choices=["ppo", "dqn"])
    parser.add_argument("--timesteps", type=int, default=2_000_000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--curve-points", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads (the GPU does the network work)")
    parser.add_argument("--name", default="atari", help="result file stem")
    args = parser.parse_args()
    games = atari_games()
    unknown = sorted(set(args.envs) - set(games))
    if unknown:
        parser.error(f"no Atari entry for {unknown} in hyperparams/ppo.yml; known: {games}")
    jobs = [
        Job(algo, env_id, args.timesteps, seed, args.eval_episodes, args.curve_points, args.threads)
        for algo in args.algos
        for env_id in args.envs
        for seed in range(args.seeds)
    ]
    benchmark(jobs, 1, args.name, {"size": f"{args.timesteps} teacher steps per game"})


if __name__ == "__main__":
    main()
