"""One ``imitation`` run for ``vs_imitation.py``, inside imitation's own virtualenv (SB3 2.2, gymnasium 0.29).

Prints one JSON line: the student's mean return, the wall time of the run (evaluation excluded) and the
environment steps taken. Not imported by the package; run by ``vs_imitation.py``:

    <imitation venv>/bin/python benchmarks/imitation_worker.py --teacher DIR --mode bc --seed 0 --steps 10000
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch as th
from imitation.algorithms import bc
from imitation.algorithms.dagger import SimpleDAggerTrainer
from imitation.data import rollout
from imitation.data.wrappers import RolloutInfoWrapper
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecNormalize

ALGOS = {"ppo": PPO, "dqn": DQN}


def alias_gym() -> None:
    """Published agents' pickles (``vecnormalize.pkl``) name the module ``gym``: read them with gymnasium's."""
    import gymnasium.spaces.box
    import gymnasium.spaces.discrete  # noqa: F401

    for name, module in list(sys.modules.items()):
        if name == "gymnasium" or name.startswith("gymnasium."):
            sys.modules.setdefault("gym" + name[len("gymnasium") :], module)


class StepCounter(gym.Wrapper):
    """Counts every environment step taken for training (the evaluation environment has none)."""

    steps = 0

    def step(self, action):
        StepCounter.steps += 1
        return self.env.step(action)


def environment(run: pathlib.Path, env_id: str, seed: int, training: bool = True):
    """The environment as the teacher saw it: its ``VecNormalize`` statistics, frozen, when it has some."""
    wrapper = (lambda env: RolloutInfoWrapper(StepCounter(env))) if training else None
    venv = make_vec_env(env_id, n_envs=1, seed=seed, wrapper_class=wrapper)
    statistics = run / env_id / "vecnormalize.pkl"
    if statistics.exists():
        venv = VecNormalize.load(str(statistics), venv)
        venv.training = False
        venv.norm_reward = False
    return venv


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", type=pathlib.Path, required=True, help="an RL-Zoo run folder algo/EnvId_N")
    parser.add_argument("--mode", choices=["bc", "dagger"], required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--net-arch", type=int, nargs="+", required=True)
    parser.add_argument("--samples-per-transition", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=30)
    args = parser.parse_args()
    th.set_num_threads(1)
    alias_gym()
    algo = args.teacher.parent.name
    env_id = args.teacher.name.rsplit("_", 1)[0]
    venv = environment(args.teacher, env_id, args.seed)
    expert = ALGOS[algo].load(
        args.teacher / f"{env_id}.zip",
        custom_objects={
            "observation_space": venv.observation_space,
            "action_space": venv.action_space,
            "lr_schedule": lambda _: 0.0,
            "learning_rate": 0.0,
            "clip_range": lambda _: 0.0,
            "exploration_schedule": lambda _: 0.0,
        },
        device="cpu",
    )
    rng = np.random.default_rng(args.seed)
    th.manual_seed(args.seed)
    student = ActorCriticPolicy(venv.observation_space, venv.action_space, lambda _: 1e-3, net_arch=list(args.net_arch))
    began = time.perf_counter()
    if args.mode == "bc":
        # The expert acts (imitation samples its actions, deterministic_policy=False) for --steps steps,
        # then BC takes --samples-per-transition samples per transition in batches of --batch-size.
        transitions = rollout.flatten_trajectories(
            rollout.rollout(expert, venv, rollout.make_sample_until(min_timesteps=args.steps), rng=rng)
        )
        trainer = bc.BC(
            observation_space=venv.observation_space,
            action_space=venv.action_space,
            demonstrations=transitions,
            policy=student,
            batch_size=args.batch_size,
            rng=rng,
        )
        n_batches = max(1, args.samples_per_transition * len(transitions) // args.batch_size)
        trainer.train(n_batches=n_batches, progress_bar=False, log_interval=10**9)
    else:
        trainer = bc.BC(
            observation_space=venv.observation_space,
            action_space=venv.action_space,
            policy=student,
            batch_size=args.batch_size,
            rng=rng,
        )
        with tempfile.TemporaryDirectory() as scratch:
            dagger = SimpleDAggerTrainer(
                venv=venv, scratch_dir=scratch, expert_policy=expert, bc_trainer=trainer, rng=rng
            )
            dagger.train(args.steps, bc_train_kwargs={"progress_bar": False, "log_interval": 10**9})
    seconds = time.perf_counter() - began
    eval_env = environment(args.teacher, env_id, 10_000, training=False)
    returns, _ = evaluate_policy(trainer.policy, eval_env, n_eval_episodes=args.episodes, deterministic=True)
    print(json.dumps({"return": float(returns), "seconds": seconds, "env_steps": StepCounter.steps}))


if __name__ == "__main__":
    main()
