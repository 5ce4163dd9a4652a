"""Which MinAtar student network learns its teacher best at the same parameter budget, distilled in real time.

One teacher per seed (``--algo``: ``hyperparams/<algo>.yml``'s MinAtar entry) carries one callback with every
architecture as a student, so all of them see the same batches of the same teacher; each is scored at the end
(greedy, random-normalised: 0 random, 1 the teacher) and by its greedy agreement with the teacher on the
teacher's own trajectories. Architectures: the ladder's 1.7% student, and the other families at the width whose
acting parameters are nearest its own (log scale, picked by :func:`sb3_distill.ladder`):

- ``plain``: :func:`sb3_distill.ladder.minatar_cnn_student`, the ladder's own (Young & Tian's layout, narrower);
- ``pooled``: :func:`sb3_distill.ladder.minatar_pooled_student` (``pool=2``, ``features_dim = 2 * channels``);
- ``pooled-square``: the same with ``features_dim = channels``;
- ``mlp``: :func:`sb3_distill.ladder.mlp_student`, one hidden layer over the flattened frame.

``--families`` picks the arms besides ``plain`` (default: ``pooled pooled-square``). ``--averaging`` adds, for
each arm and each half-life given (in teacher steps), an exponential moving average of that student's weights,
updated after every distillation (weight ``0.5 ** (steps since the last update / half-life)`` on the old
average): arm ``<arm>@ema<half-life>``, the same network, never trained itself.

Writes ``benchmarks/results/<name>.json``; the summary is the median over seeds of each architecture's
normalised return and of its difference to ``plain`` on the same teacher.

    python benchmarks/student_architectures.py --env MinAtar/SpaceInvaders-v1 --seeds 3 --timesteps 1000000
    python benchmarks/student_architectures.py --algo dqn --env MinAtar/Breakout-v1 --ratio 0.05 \
        --families pooled mlp --seeds 3 --first-seed 3 --timesteps 500000 --jobs 2
    python benchmarks/student_architectures.py --algo dqn --env MinAtar/Breakout-v1 --ratio 0.05 --families \
        --averaging 10000 30000 100000 --seeds 4 --first-seed 13 --timesteps 500000 --episodes 200 --jobs 2 \
        --name student_architectures_breakout_dqn_500k_averaging_seeds13-16
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch as th
from common import (
    EVAL_SEED,
    FAMILIES,
    Clock,
    RandomPolicy,
    evaluation_env,
    normalized_or_none,
    write_result,
    zoo_teacher,
)
from stable_baselines3.common.policies import BasePolicy

from sb3_distill import RealTimeDistillCallback, ladder
from sb3_distill.envs import register
from sb3_distill.evaluation import trajectory_agreement
from sb3_distill.ladder import Spec
from sb3_distill.outputs import count_acting_parameters


class AveragingCallback(RealTimeDistillCallback):
    """
    The callback, also keeping exponential moving averages of each student's weights (``averages``, by arm
    name), updated each time a distillation has finished.

    :param half_lives: the averages' half-lives, in teacher steps
    """

    def __init__(self, half_lives: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.half_lives = half_lives
        self.averages: dict[str, BasePolicy] = {}
        self.averaged_at = 0

    def _finish_distillation(self, block: bool = True) -> dict[str, Any] | None:
        metrics = super()._finish_distillation(block)
        if metrics is not None:
            self.update_averages()
        return metrics

    def update_averages(self) -> None:
        assert self.distiller is not None
        elapsed = self.model.num_timesteps - self.averaged_at
        self.averaged_at = self.model.num_timesteps
        for name, student in self.distiller.students.items():
            for half_life in self.half_lives:
                key = f"{name}@ema{half_life // 1000}k"
                if key not in self.averages:
                    self.averages[key] = copy.deepcopy(student)
                    continue
                weight = 1.0 - 0.5 ** (elapsed / half_life)  # on the student's weights now
                pairs = zip(self.averages[key].state_dict().values(), student.state_dict().values(), strict=True)
                with th.no_grad():
                    for average, now in pairs:
                        if average.is_floating_point():
                            average.lerp_(now, weight)
                        else:
                            average.copy_(now)


def run(job: dict[str, Any]) -> dict[str, Any]:
    """One teacher with every arm as a student of one callback; each arm scored at the end."""
    algo, env_id, seed, steps, episodes = (job[key] for key in ("algo", "env", "seed", "steps", "episodes"))
    th.set_num_threads(1)
    register()
    teacher, _ = zoo_teacher(algo, env_id, seed)
    rungs = ladder(teacher, [job["ratio"]])
    (name,) = rungs
    specs: dict[str, Spec] = {"plain": rungs[name]}
    parameters = {"plain": rungs.parameters[name]}
    budget = rungs.parameters[name] / count_acting_parameters(teacher.policy)  # the plain student's own ratio
    for arm in job["families"]:  # the family's width nearest the plain student (log scale)
        found = ladder(teacher, [budget], family=FAMILIES[arm])
        (name,) = found
        specs[arm], parameters[arm] = found[name], found.parameters[name]
    callback = AveragingCallback(job["averaging"], student=specs, seed=seed)
    began = time.perf_counter()
    teacher.learn(steps, callback=callback)
    seconds = time.perf_counter() - began
    learned = dict(callback.students)
    for key, average in callback.averages.items():
        arm = key.split("@")[0]
        learned[key] = average
        specs[key], parameters[key] = specs[arm], parameters[arm]
    clock = Clock()
    eval_env = evaluation_env(algo, env_id, teacher)
    teacher_return = clock.evaluate(teacher, eval_env, episodes, seed=EVAL_SEED)
    random_return = clock.evaluate(RandomPolicy(teacher.action_space, seed), eval_env, episodes, seed=EVAL_SEED)
    students = {}
    for arm, student in learned.items():
        score = clock.evaluate(student, eval_env, episodes, seed=EVAL_SEED)
        students[arm] = {
            "student_kwargs": repr(specs[arm][1]),
            "acting_parameters": parameters[arm],
            "compression": parameters[arm] / count_acting_parameters(teacher.policy),
            "return": score,
            "normalized": normalized_or_none(score, teacher_return, random_return),
            "agreement": trajectory_agreement(teacher, student, evaluation_env(algo, env_id, teacher), n_steps=2000),
        }
    line = ", ".join(
        f"{arm} ({value['acting_parameters']} parameters) {value['return']:.2f}" for arm, value in students.items()
    )
    print(f"{env_id} seed {seed}: teacher {teacher_return:.2f}, random {random_return:.2f}; {line}", flush=True)
    return {
        "algo": algo,
        "env": env_id,
        "seed": seed,
        "teacher_steps": steps,
        "seconds": seconds,
        "distillations": callback.n_distillations,
        "teacher_return": teacher_return,
        "random_return": random_return,
        "students": students,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo", choices=["ppo", "dqn"])
    parser.add_argument("--env", default="MinAtar/SpaceInvaders-v1")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--timesteps", type=int, default=1_000_000)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--ratio", type=float, default=0.017, help="the budget: this ladder rung's parameters")
    parser.add_argument(
        "--families", nargs="*", default=["pooled", "pooled-square"], choices=[f for f in FAMILIES if f != "plain"]
    )
    parser.add_argument(
        "--averaging", nargs="*", type=int, default=[], help="half-lives (teacher steps) of weight averages"
    )
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (one torch thread each)")
    parser.add_argument("--name", default=None, help="result file stem (default student_architectures_<game>)")
    args = parser.parse_args()
    jobs = [
        {
            "algo": args.algo,
            "env": args.env,
            "seed": seed,
            "steps": args.timesteps,
            "episodes": args.episodes,
            "ratio": args.ratio,
            "families": args.families,
            "averaging": args.averaging,
        }
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, jobs))
    arms = list(runs[0]["students"])
    scored = [r for r in runs if r["teacher_return"] > r["random_return"]]  # normalised scores need a teacher
    summary = {
        arm: {
            "median_normalized": statistics.median(r["students"][arm]["normalized"] for r in scored),
            "median_difference_to_plain": statistics.median(
                r["students"][arm]["normalized"] - r["students"]["plain"]["normalized"] for r in scored
            ),
            "median_agreement": statistics.median(r["students"][arm]["agreement"] for r in runs),
        }
        if scored
        else {"median_agreement": statistics.median(r["students"][arm]["agreement"] for r in runs)}
        for arm in arms
    }
    game = args.env.split("/")[-1].split("-")[0].lower()
    name = args.name or f"student_architectures_{game}" + ("" if args.algo == "ppo" else f"_{args.algo}")
    path = write_result(
        name,
        {
            "benchmark": "student_architectures",
            "algo": args.algo,
            "env": args.env,
            "ratio": args.ratio,
            "averaging_half_lives": args.averaging,
            "seeds": [r["seed"] for r in runs],
            "timesteps": args.timesteps,
            "eval_episodes": args.episodes,
            "runs": runs,
            "summary": summary,
        },
    )
    print(f"written {path}")
    for arm, values in summary.items():
        print(f"  {arm}: " + ", ".join(f"{key} {value:.3f}" for key, value in values.items()))


if __name__ == "__main__":
    main()
