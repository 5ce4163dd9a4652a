"""sb3-distill against ``imitation`` (BC, DAgger) on the same published teachers, the same data and student.

For each teacher (RL-Zoo's published agents in ``tests/data/zoo-agents``), mode and seed, both libraries
train an ``ActorCriticPolicy`` student (``net_arch`` per teacher) from the teacher with the same number of
environment steps, one torch thread, and are evaluated on 30 greedy episodes from the same seeds:

- ``teacher``: ``distill(collect="teacher")`` (4 samples per transition, batches of 128: the defaults)
  against ``imitation``'s BC on the teacher's rollouts (4 samples per transition, batches of 128);
- ``student``: ``distill(collect="student")`` against ``imitation``'s ``SimpleDAggerTrainer`` (its defaults,
  whose beta schedule lets the expert act in a falling share of each round; ``--options collect=mixed`` gives
  ours the same shape: the teacher's share falls from 1 to 0 over the first half).

``imitation`` pins old SB3 and gymnasium, so it runs in its own virtualenv, made here on first use
(``--imitation-venv``; ``pip`` needs the package index). Every run is a fresh process; the two libraries
alternate which goes first. A DQN teacher is a policy to imitation too (it only needs actions); imitation's
rollouts sample the teacher's actions, a DQN's epsilon-greedy with its saved exploration rate.
Results: ``benchmarks/results/vs_imitation.json``. Not part of ``make test``.

    python benchmarks/vs_imitation.py                          # 3 teachers x 2 modes x 3 seeds, 10k steps
    python benchmarks/vs_imitation.py --modes teacher --steps 50000 --name 50k
    python benchmarks/vs_imitation.py --modes student --options collect=mixed --name mixed   # against DAgger
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any

import torch as th
import yaml
from common import RandomPolicy, write_result
from scipy.stats import mannwhitneyu
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_distill import distill, wrap_env
from sb3_distill.teachers import open_teacher, teacher_env

HERE = pathlib.Path(__file__).resolve().parent
ZOO = HERE.parent / "tests" / "data" / "zoo-agents"
#: teacher run folder -> the student's net_arch
TEACHERS = {"ppo/CartPole-v1_1": [8], "dqn/CartPole-v1_1": [8], "ppo/MountainCar-v0_1": [16]}
IMITATION = {"teacher": "bc", "student": "dagger"}
LIBRARIES = ("sb3-distill", "imitation")
#: imitation 1.0.1 pins stable-baselines3 2.2.1 and gymnasium 0.29.1; torch as here (the CPU build on disk)
IMITATION_REQUIREMENTS = ["imitation==1.0.1"]
EVAL_SEED = 10_000


def env_id(teacher: str) -> str:
    return teacher.split("/", 1)[1].rsplit("_", 1)[0]


def evaluation(teacher: str, policy: Any, student: Any, episodes: int) -> float:
    """Greedy mean return, under the teacher's frozen ``VecNormalize`` statistics when it has some."""
    env = make_vec_env(env_id(teacher), n_envs=1, seed=EVAL_SEED)
    if student is not None:
        env = wrap_env(env, student)
    returns, _ = evaluate_policy(policy, env, n_eval_episodes=episodes, deterministic=True)
    return float(returns)  # type: ignore[arg-type]


def ours(teacher: str, mode: str, seed: int, steps: int, episodes: int, options: dict[str, Any]) -> dict[str, Any]:
    """One sb3-distill run (in a fresh process: ``--ours``), with ``options`` for ``distill``."""
    th.set_num_threads(1)
    model, agent = open_teacher(str(ZOO / teacher), device="cpu")  # loaded off the clock, as imitation's expert
    env = teacher_env(model, agent, make_vec_env(env_id(teacher), n_envs=1, seed=seed), seed=seed)
    options = dict(options)
    collect = options.pop("collect", mode)  # --options collect=mixed: DAgger's counterpart with a falling beta
    began = time.perf_counter()
    student = distill(
        model,
        "MlpPolicy",
        env,
        steps,
        collect=collect,
        student_algo="ppo",
        student_kwargs={"net_arch": TEACHERS[teacher]},
        seed=seed,
        device="cpu",
        **options,
    )
    seconds = time.perf_counter() - began
    return {"return": evaluation(teacher, student, student, episodes), "seconds": seconds, "env_steps": steps}


def imitation_python(venv: pathlib.Path) -> pathlib.Path:
    """imitation's virtualenv, made on first use (torch pinned first, so that pip keeps the installed build)."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"torch=={th.__version__.split('+')[0]}"], check=True)
        subprocess.run([*pip, *IMITATION_REQUIREMENTS], check=True)
    return python


def run(python: pathlib.Path, library: str, teacher: str, mode: str, seed: int, args: argparse.Namespace) -> dict:
    common = ["--seed", str(seed), "--steps", str(args.steps)]
    if library == "sb3-distill":
        command = [sys.executable, __file__, "--ours", teacher, mode, *common, "--episodes", str(args.episodes)]
        command += ["--options", *args.options] if args.options else []
    else:
        arch = [str(units) for units in TEACHERS[teacher]]
        command = [str(python), str(HERE / "imitation_worker.py"), "--teacher", str(ZOO / teacher)]
        command += ["--mode", IMITATION[mode], *common, "--net-arch", *arch, "--episodes", str(args.episodes)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=HERE).stdout
    result = json.loads(output.strip().splitlines()[-1])
    print(f"{teacher} {mode} seed {seed} {library}: {result}", flush=True)
    return {"library": library, "teacher": teacher, "mode": mode, "seed": seed, **result}


def references(teacher: str, episodes: int) -> dict[str, float]:
    """The teacher's and a random policy's returns on the evaluation episodes."""
    model, agent = open_teacher(str(ZOO / teacher), device="cpu")
    env = teacher_env(model, agent, make_vec_env(env_id(teacher), n_envs=1, seed=EVAL_SEED), seed=EVAL_SEED)
    teacher_return = float(evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True)[0])  # type: ignore[arg-type]
    random_env = make_vec_env(env_id(teacher), n_envs=1, seed=EVAL_SEED)
    random_policy = RandomPolicy(random_env.action_space, seed=0)
    random_return = float(evaluate_policy(random_policy, random_env, n_eval_episodes=episodes)[0])  # type: ignore[arg-type]
    return {"teacher": teacher_return, "random": random_return}


def compared(runs: list[dict[str, Any]], teacher: str, mode: str) -> dict[str, Any]:
    """
    sb3-distill against imitation over seeds: medians, how often ours is ahead at the same seed, and the
    Mann-Whitney U test's two-sided p (the libraries draw their own data, so seeds do not pair the runs).
    """
    returns = {
        library: {
            r["seed"]: r["return"] for r in runs if (r["teacher"], r["mode"], r["library"]) == (teacher, mode, library)
        }
        for library in LIBRARIES
    }
    ours, theirs = returns["sb3-distill"], returns["imitation"]
    return {
        "median_difference": statistics.median(ours.values()) - statistics.median(theirs.values()),
        "sb3_distill_better_in": sum(ours[seed] > theirs[seed] for seed in ours),
        "seeds": len(ours),
        "mann_whitney_p": float(mannwhitneyu(list(ours.values()), list(theirs.values())).pvalue),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=list(TEACHERS))
    parser.add_argument("--modes", nargs="+", default=list(IMITATION), choices=list(IMITATION))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--imitation-venv", type=pathlib.Path, default=HERE / ".venv-imitation")
    parser.add_argument("--name", default=None, help="results/vs_imitation_<name>.json")
    parser.add_argument("--options", nargs="+", metavar="KEY=VALUE", help="distill options for sb3-distill's runs")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--ours", nargs=2, metavar=("TEACHER", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    options = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.options or [])}
    if args.ours:  # a worker: one of our runs, in this fresh process
        print(json.dumps(ours(*args.ours, args.seed, args.steps, args.episodes, options)))
        return
    python = imitation_python(args.imitation_venv)
    runs = []
    for seed in args.seeds:
        for teacher in args.teachers:
            for mode in args.modes:
                libraries = args.libraries
                for library in libraries if seed % 2 == 0 else libraries[::-1]:
                    runs.append(run(python, library, teacher, mode, seed, args))
    summary: dict[str, Any] = {}
    for teacher in args.teachers:
        reference = references(teacher, args.episodes)
        span = reference["teacher"] - reference["random"]
        for row in runs:
            if row["teacher"] == teacher:
                row["normalized"] = (row["return"] - reference["random"]) / span
        summary[teacher] = {"references": reference}
        for mode in args.modes:
            for library in args.libraries:
                rows = [r for r in runs if (r["teacher"], r["mode"], r["library"]) == (teacher, mode, library)]
                summary[teacher][f"{mode} {library}"] = {
                    "returns": [r["return"] for r in rows],
                    "normalized_median": statistics.median(r["normalized"] for r in rows),
                    "seconds_median": statistics.median(r["seconds"] for r in rows),
                    "env_steps_median": statistics.median(r["env_steps"] for r in rows),
                }
                print(teacher, mode, library, summary[teacher][f"{mode} {library}"], flush=True)
            if len(args.libraries) == 2:
                summary[teacher][f"{mode} compared"] = compared(runs, teacher, mode)
    versions = subprocess.run(
        [
            str(python),
            "-c",
            "import imitation, stable_baselines3, gymnasium; print(imitation.__version__, "
            "stable_baselines3.__version__, gymnasium.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    settings = {
        key: value for key, value in vars(args).items() if key in ("teachers", "modes", "seeds", "steps", "episodes")
    }
    settings["options"] = options
    write_result(
        "vs_imitation" if args.name is None else f"vs_imitation_{args.name}",
        {
            "benchmark": "vs_imitation",
            "settings": settings,
            "students": {teacher: {"net_arch": TEACHERS[teacher]} for teacher in args.teachers},
            "imitation_versions": dict(zip(("imitation", "stable-baselines3", "gymnasium"), versions, strict=True)),
            "summary": summary,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
