"""Does fine-tuning keep what distillation taught? Distil, then fine-tune with ``to_ppo``, evaluating all along.

For each teacher and seed: the student (an actor-critic, ``net_arch=[16]``) is distilled student-driven
for ``--distill-steps`` environment steps, evaluated, then fine-tuned with ``to_ppo`` under RL-Zoo's PPO
settings for the task for ``--steps`` steps, evaluated every ``--eval-every`` steps (``--episodes``
deterministic episodes, fixed seeds). Each ``--config`` is one set of ``to_ppo`` safeguards:

- ``plain``: ``value_warmup_steps=0, anchor_coef=0, rollback_below=None`` (plain PPO from the student's weights);
- ``default``: ``to_ppo``'s defaults; the others name what they change (see ``CONFIGS``).

Reported per run: the distilled return, the same student on other episodes (how far two evaluations of one
policy differ), every evaluation, the lowest evaluation over the distilled return (``min_ratio``; the target
is never below 0.9), the final return against the teacher's, and the rollback guard's starting return and
rollbacks. With a guard, the floor (``min_ratio``) is over the policies it judged, evaluated right after
each judgement, and what ``learn`` returns; ``min_ratio_between`` is over the evaluations every
``--eval-every`` steps of the model as ``EvalCallback`` evaluates it (``model.predict``: with a guard, the
policy it last passed), ``min_ratio_candidate`` over the candidate policy PPO samples from and updates,
between judgements too (results before ``judged_policy`` existed: ``min_ratio_between`` is the candidate's).
Results: ``benchmarks/results/finetune[_<name>].json``.
The README's figures (``to_ppo``'s defaults, 100 episodes per evaluation)::

    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 ppo/CartPole-v1_1 --configs default \
        --episodes 100 --jobs 2 --name cartpole_judged
    python benchmarks/finetune.py --teachers ppo/MountainCar-v0_1 --configs default --distill-steps 10000 \
        --episodes 100 --jobs 2 --name mountaincar_judged
    python -m rl_zoo3.train --algo ppo --env MinAtar/Breakout-v1 --gym-packages sb3_distill.envs \
        -conf hyperparams/ppo.yml -f zoo-minatar --seed 0 -n 2000000 --eval-freq -1
    python -m rl_zoo3.train --algo dqn --env MinAtar/Breakout-v1 --gym-packages sb3_distill.envs \
        -conf hyperparams/dqn.yml -f zoo-minatar --seed 0 -n 1000000 --eval-freq -1
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 \
        ppo/MinAtar-Breakout-v1_1 --configs default --distill-steps 50000 --steps 100000 --eval-every 10000 \
        --episodes 100 --jobs 2 --name minatar_breakout_judged

With ``predict`` acting with the policy the guard last passed (evaluations as ``EvalCallback`` makes them,
each also of the candidate), today's distillation defaults, a MinAtar DQN teacher retrained as above::

    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 --configs default --episodes 100 --eval-envs 10 \
        --jobs 2 --name cartpole_dqn_served
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 --configs default \
        --distill-steps 50000 --steps 100000 --eval-every 10000 --episodes 100 --jobs 2 \
        --name minatar_breakout_dqn_served

Parity (``at_parity``: final returns at 0.95 of the teacher's or more; with ``--parity-episodes``, what
``learn`` hands over and the teacher on the same episodes, that many), students distilled until they stop
improving (CartPole: 60k steps, where 8k left one DQN student of five at 191; MinAtar: 250k for the PPO
teacher, 400k for the DQN teacher, ``--zoo`` teachers retrained with the commands above, PPO 2M steps, DQN
1M; ``..._ppo_parity150k.json``: 150k steps, no ``--parity-episodes``)::

    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 ppo/CartPole-v1_1 --configs default \
        --distill-steps 60000 --episodes 100 --eval-envs 10 --name cartpole_parity
    python benchmarks/finetune.py --zoo zoo-minatar --teachers ppo/MinAtar-Breakout-v1_1 --configs default \
        --distill-steps 250000 --steps 100000 --eval-every 10000 --episodes 50 --eval-envs 10 \
        --parity-episodes 200 --name minatar_breakout_ppo_parity
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 --configs default \
        --distill-steps 400000 --steps 100000 --eval-every 10000 --episodes 50 --eval-envs 10 \
        --parity-episodes 200 --name minatar_breakout_dqn_parity
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 --configs judge100 \
        --distill-steps 400000 --steps 100000 --eval-every 10000 --episodes 50 --eval-envs 10 \
        --parity-episodes 200 --jobs 2 --name minatar_breakout_dqn_parity_judge100

and the same with ``--configs confirm`` (``rollback_confirm=True``), ``--name
minatar_breakout_{dqn,ppo}_parity_confirm`` (one run per teacher, with its own ``--distill-steps``).

At the distillation defaults of today (8 samples per transition when the student acts), with the teacher as
anchor (``teacher``: ``to_ppo(teacher=...)``) and a longer critic warm-up (``warmup20k``)::

    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 --configs default teacher --episodes 30 \
        --name cartpole_dqn_teacher_anchor
    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 --configs plain no_target_kl guarded_no_anchor \
        --seeds 2 --episodes 30 --name probe_cartpole_dqn_seed2
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 --configs default \
        teacher --distill-steps 50000 --steps 100000 --eval-every 10000 --episodes 50 --jobs 2 \
        --name minatar_breakout_dqn_teacher_anchor
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 --configs warmup20k \
        --distill-steps 50000 --steps 100000 --eval-every 10000 --episodes 50 --name minatar_breakout_dqn_warmup20k

Sharpening less (``sharpen70``, ``no_sharpen``) and a fifth of the learning rate (``lr02``)::

    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 --configs no_sharpen sharpen70 --episodes 30 \
        --name cartpole_dqn_sharpen
    python benchmarks/finetune.py --teachers ppo/CartPole-v1_1 --configs sharpen70 --episodes 30 \
        --name cartpole_ppo_sharpen70
    python benchmarks/finetune.py --teachers ppo/MountainCar-v0_1 --configs sharpen70 --distill-steps 10000 \
        --episodes 30 --name mountaincar_sharpen70
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 --configs sharpen70 \
        --distill-steps 50000 --steps 100000 --eval-every 10000 --episodes 50 --name minatar_breakout_dqn_sharpen70
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 --configs lr02 \
        --distill-steps 50000 --steps 100000 --eval-every 10000 --episodes 50 --name minatar_breakout_dqn_lr02

``finetune_cartpole_judged20.json``: the guard judging 20 fresh episodes of the training environment (no
common seeds; 30 episodes per evaluation); ``finetune_cartpole_crn.json``: common seeds, 20 episodes
(``default`` then) against 50 (``judge50``); in both, the first "judged" entry is the first update after
the warm-up, which the benchmark then counted as judged. Earlier defaults (the guard judging windows of
training episodes of the sampled policy)::

    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 ppo/CartPole-v1_1 --configs default \
        --episodes 30 --jobs 2 --name cartpole_keep
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 \
        ppo/MinAtar-Breakout-v1_1 --configs default --distill-steps 50000 --steps 100000 --eval-every 10000 \
        --episodes 100 --jobs 2 --name minatar_breakout_keep

The guard judging on an evaluation environment of its own (``eval_env``; each judged policy is evaluated)::

    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 ppo/CartPole-v1_1 --configs eval_guard \
        --episodes 30 --jobs 2 --name cartpole_evalguard
    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 \
        ppo/MinAtar-Breakout-v1_1 --configs eval_guard50 --distill-steps 50000 --steps 100000 \
        --eval-every 10000 --episodes 100 --jobs 2 --name minatar_breakout_evalguard

``finetune_minatar_breakout_dqn_evalguard.json`` is an earlier run with ``--chunks`` (10k steps per
``learn`` call, so PPO's linear schedules restart at each call), when the guard judged the weights before
each update rather than after it: worst 0.86, 7-10 rollbacks in four seeds.
``finetune_minatar_breakout_dqn_evalguard_reestimate.json`` tried re-evaluating the student's own weights
at each rollback to them and averaging that into the starting return: the lower bar let worse policies
through (worst 0.84) and the finals did not move (6.25 / 4.45 / 4.34 / 7.0 / 4.2), so it was reverted.

The critic kept on rollback (``restore_critic``: put back with the actor, as before), PPD throughout (``ppd``),
and the critic on its own copy of a CNN student's shared features extractor (``own_critic``, the default since;
``shared_critic``: the extractor shared, as before), teachers retrained with the commands above, 200 episodes
per evaluation, parity on 2000 (``--students DIR`` shares one distillation per seed between the runs)::

    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 --configs default \
        restore_critic --distill-steps 400000 --steps 100000 --eval-every 10000 --episodes 200 --eval-envs 10 \
        --parity-episodes 2000 --students DIR --jobs 2 --name minatar_breakout_dqn_keep_critic
    python benchmarks/finetune.py ... --configs ppd --name minatar_breakout_dqn_ppd            # the same options
    python benchmarks/finetune.py ... --configs own_critic --name minatar_breakout_dqn_own_critic
    python benchmarks/finetune.py ... --configs default --steps 200000 --eval-every 20000 \
        --name minatar_breakout_dqn_own_critic200k
    python benchmarks/finetune.py --zoo zoo-minatar --teachers ppo/MinAtar-Breakout-v1_1 --configs default \
        --distill-steps 250000 --steps 100000 --eval-every 10000 --episodes 200 --eval-envs 10 \
        --parity-episodes 2000 --students DIR --jobs 2 --name minatar_breakout_ppo_own_critic
    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 ppo/CartPole-v1_1 --configs default \
        --distill-steps 60000 --episodes 100 --eval-envs 10 --parity-episodes 500 --students DIR \
        --name cartpole_keep_critic
    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 --seeds 2 --configs default --distill-steps 60000 \
        --steps 150000 --eval-every 15000 --episodes 100 --eval-envs 10 --parity-episodes 500 --students DIR \
        --name cartpole_dqn_seed2_150k

(``..._ppo_keep_critic.json``: the PPO teacher's students with the critic kept on rollback and the shared
extractor.)

The critic distilled from a DQN teacher's ``max_a Q`` (``q_critic``; ``..._dqn_q_critic.json``: the value loss
through the shared CNN, before the value head was calibrated; ``..._dqn_q_critic_detached.json``: calibrated, the
actor's features left alone, the default since), on a CNN of its own (``q_critic_own``), and the PPO teacher's
students under today's value distillation (a fresh ``--students`` folder: the critic no longer moves the CNN)::

    python benchmarks/finetune.py --zoo zoo-minatar --teachers dqn/MinAtar-Breakout-v1_1 --configs q_critic \
        --distill-steps 400000 --steps 100000 --eval-every 10000 --episodes 200 --eval-envs 10 \
        --parity-episodes 2000 --students DIR --jobs 2 --name minatar_breakout_dqn_q_critic_detached
    python benchmarks/finetune.py ... --configs q_critic_own --name minatar_breakout_dqn_q_critic_own
    python benchmarks/finetune.py --zoo zoo-minatar --teachers ppo/MinAtar-Breakout-v1_1 --configs default \
        --distill-steps 250000 --steps 100000 --eval-every 10000 --episodes 200 --eval-envs 10 \
        --parity-episodes 2000 --students DIR --jobs 2 --name minatar_breakout_ppo_detached_critic
    python benchmarks/finetune.py --teachers dqn/CartPole-v1_1 --configs q_critic fresh_critic \
        --distill-steps 60000 --episodes 100 --eval-envs 10 --students DIR --name cartpole_dqn_q_critic

``q_critic_own`` became the default for a Q-value teacher's actor-critic CNN student; against the fresh critic on
a second and a third DQN teacher (trained as above with ``-f zoo-minatar2 --seed 1`` and ``-f zoo-minatar3 --seed
2``; the third's run the same with ``--zoo zoo-minatar3 --name minatar_breakout_dqn_teacher3``)::

    python benchmarks/finetune.py --zoo zoo-minatar2 --teachers dqn/MinAtar-Breakout-v1_1 --configs default \
        fresh_critic --distill-steps 400000 --steps 100000 --eval-every 10000 --episodes 200 --eval-envs 10 \
        --parity-episodes 2000 --jobs 2 --name minatar_breakout_dqn_teacher2

Teachers are RL-Zoo run folders (``algo/EnvId_N``) under ``--zoo`` (default: the published agents in
``tests/data/zoo-agents``) or, for MinAtar, trained here by ``benchmarks/common.zoo_teacher``.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch as th
from common import write_result
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import sb3_distill.envs  # noqa: F401  (registers MinAtar)
from sb3_distill import distill, load_student, save_student, to_dqn, to_ppo, wrap_env
from sb3_distill.agents import SavedAgent
from sb3_distill.architectures import MinAtarCNN
from sb3_distill.finetune import greedy_observations
from sb3_distill.teachers import open_teacher, teacher_env
from sb3_distill.zoo import teacher_settings

#: The student per task (the hyperparameter files' MinAtar student: a 5% CNN).
STUDENTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"net_arch": [16]},
    "MountainCar-v0": {"net_arch": [16]},
    "MinAtar/Breakout-v1": {
        "features_extractor_class": MinAtarCNN,
        "features_extractor_kwargs": {"channels": 8, "features_dim": 16},
        "net_arch": [],
    },
}
#: A final return at this fraction of the teacher's or more is parity (random-normalised where returns are negative).
PARITY = 0.95
#: Seeds the episodes of the parity evaluation (other episodes than those of the evaluations along the way).
PARITY_SEED = 40_000
#: A random policy's return where returns are negative (MountainCar: every episode times out at 200 steps).
RANDOM = {"MountainCar-v0": -200.0}
ZOO = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "zoo-agents"
#: configuration keys that are ``distill`` arguments (by their name there), not ``to_ppo``'s
DISTILL_KEYS = {"distill_loss": "loss", "distill_value": "distill_value", "distill_student_kwargs": "student_kwargs"}
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {
        "value_warmup_steps": 0,
        "anchor_coef": 0.0,
        "greedy_probability": None,
        "target_kl": None,
        "rollback_below": None,
    },
    "sharpen": {"value_warmup_steps": 0, "anchor_coef": 0.0, "rollback_below": None},
    "sharpen_warmup": {"value_warmup_steps": 5_000, "anchor_coef": 0.0, "rollback_below": None},
    "sw_kl02": {"value_warmup_steps": 5_000, "anchor_coef": 0.0, "target_kl": 0.02, "rollback_below": None},
    "sw_anchor1": {"value_warmup_steps": 5_000, "anchor_coef": 1.0, "anchor_steps": 200_000, "rollback_below": None},
    "sw_anchor1_kl02": {
        "value_warmup_steps": 5_000,
        "anchor_coef": 1.0,
        "anchor_steps": 200_000,
        "target_kl": 0.02,
        "rollback_below": None,
    },
    "sw_anchor03_kl02": {
        "value_warmup_steps": 5_000,
        "anchor_coef": 0.3,
        "anchor_steps": 200_000,
        "target_kl": 0.02,
        "rollback_below": None,
    },
    "default": {},  # to_ppo's defaults: sharpening, warm-up, target_kl, the anchor (1.0 over 10k), the guard (0.95)
    "no_guard": {"anchor_steps": 50_000, "rollback_below": None},  # the defaults before the rollback guard
    "guard_no_anchor": {"anchor_coef": 0.0, "rollback_below": 0.9},
    "guard_anchor25k": {"anchor_coef": 1.0, "anchor_steps": 25_000, "rollback_below": 0.9},
    "guard_anchor10k": {"anchor_coef": 1.0, "anchor_steps": 10_000, "rollback_below": 0.9},
    "sharpen97": {"greedy_probability": 0.97},  # the defaults, sharper: sampled actions nearer the greedy ones
    # an anchor that does not fade: the policy stays tied to the guard's last kept weights, which move on
    "anchor_kept": {"anchor_coef": 1.0, "anchor_steps": 10**9, "rollback_below": 0.95},
    "warmup20k": {"value_warmup_steps": 20_000},  # the defaults with a longer critic-only warm-up
    "guard95_no_anchor": {"anchor_coef": 0.0, "rollback_below": 0.95},
    "guard95_anchor10k": {"anchor_coef": 1.0, "anchor_steps": 10_000, "rollback_below": 0.95},
    "no_anchor": {"anchor_coef": 0.0, "rollback_below": None},
    "anchor1_50k": {"anchor_coef": 1.0, "anchor_steps": 50_000, "rollback_below": None},
    "anchor1_25k": {"anchor_coef": 1.0, "anchor_steps": 25_000, "rollback_below": None},
    # to_dqn on a Q-network student (student_algo="dqn"), RL-Zoo's DQN settings for the task
    # the guard judges the deterministic policy on an evaluation environment of its own (other episodes than
    # the ones reported), rollback_episodes episodes per judgement
    "eval_guard": {"eval_env": "own"},
    "eval_guard50": {"eval_env": "own", "rollback_episodes": 50},
    # the defaults, judging on 50 episodes (the default judged on 20 then)
    "judge50": {"rollback_episodes": 50},
    "judge100": {"rollback_episodes": 100},  # the defaults, judging on twice the default's episodes
    # the defaults, a pass confirmed on a second set of 50 episodes (against the start's return there)
    "confirm": {"rollback_confirm": True},
    # the defaults less one safeguard (what holds a weak student back from its teacher?)
    "guarded_no_anchor": {"anchor_coef": 0.0},
    "no_target_kl": {"target_kl": None},
    "no_sharpen": {"greedy_probability": None},
    "sharpen70": {"greedy_probability": 0.7},  # sampled actions off the greedy ones 30% of the time: more exploration
    # the defaults at a fifth of RL-Zoo's learning rate (fine-tuning's usual smaller steps)
    "lr02": {"lr_scale": 0.2},
    # the defaults with the teacher as anchor (PPD while the anchor fades) instead of the starting student
    "teacher": {"teacher": True},
    "teacher50k": {"teacher": True, "anchor_steps": 50_000},
    # the defaults with an anchor to the teacher that does not fade (Proximal Policy Distillation throughout)
    "ppd": {"teacher": True, "anchor_steps": 10**9},
    # the critic reading a copy of the student's features extractor (the default since; value loss off the
    # actor's features), and PPO's shared extractor (the default before)
    "own_critic": {"own_critic_extractor": True},
    "shared_critic": {"own_critic_extractor": False},
    # the defaults with a rollback that also puts the critic back (the default until the critic was kept)
    "restore_critic": {"rollback_keeps_critic": False},
    # a Q-value teacher's CNN student: the critic distilled from max_a Q through the CNN it shares with the actor
    # (value loss detached from it), or left fresh (PPO's critic then learns from a copy of the actor's CNN)
    "q_critic": {"distill_value": True, "distill_student_kwargs": {"share_features_extractor": True}},
    "fresh_critic": {"distill_value": False},
    # the critic distilled from max_a Q on a features extractor of its own (the actor's stays as distilled alone):
    # the default for a Q-value teacher's actor-critic CNN student since (wants_critic_extractor)
    "q_critic_own": {"distill_value": True, "distill_student_kwargs": {"share_features_extractor": False}},
    "dqn_default": {},
    "dqn_mse": {"distill_loss": "mse"},  # the student regresses the teacher's Q-values instead of their softmax
}


def evaluate(
    policy: Any, env_id: str, episodes: int, student: Any = None, seed: int = 10_000, n_envs: int = 1
) -> float:
    """
    Greedy mean return; with ``student``, under the ``VecNormalize`` statistics it recorded (if any), over
    ``n_envs`` environments side by side (the episodes split evenly between them).
    """
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    if student is not None:
        env = wrap_env(env, student)
    try:
        return float(np.mean(evaluate_policy(policy, env, n_eval_episodes=episodes, deterministic=True)[0]))
    finally:
        env.close()


class Evaluations(BaseCallback):
    """
    Evaluate the model every ``every`` environment steps as ``EvalCallback`` does, through ``model.predict``
    (``results``: with a rollback guard, the policy it last passed; without, the policy PPO trains), with a
    guard the candidate PPO trains too (``candidates``), and each policy the guard has just judged
    (``judged``: right after the judgement, before the policy acts).
    """

    def __init__(self, env_id: str, every: int, episodes: int, student: Any, n_envs: int) -> None:
        super().__init__()
        self.env_id, self.every, self.episodes, self.student = env_id, every, episodes, student
        self.n_envs = n_envs
        self.results: list[tuple[int, float]] = []
        self.candidates: list[tuple[int, float]] = []
        self.judged: list[tuple[int, float]] = []
        self.next_at = every
        self.judgements = 0

    def evaluate(self, candidate: bool = False) -> tuple[int, float]:
        model = self.model.policy if candidate else self.model
        return self.model.num_timesteps, evaluate(model, self.env_id, self.episodes, self.student, n_envs=self.n_envs)

    def _on_rollout_start(self) -> None:
        judgements = getattr(self.model, "judgements", 0)  # the starting return's counts: the student itself
        if judgements > self.judgements:
            self.judgements = judgements
            self.judged.append(self.evaluate())

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.next_at += self.every
            self.results.append(self.evaluate())
            if getattr(self.model, "judged_policy", None) is not None:
                self.candidates.append(self.evaluate(candidate=True))
        return True


def scaled(learning_rate: float | Callable[[float], float], scale: float) -> float | Callable[[float], float]:
    """A learning rate or schedule times ``scale``."""
    if callable(learning_rate):
        return lambda progress_remaining: scale * learning_rate(progress_remaining)
    return scale * learning_rate


def ratio(value: float, reference: float, env_id: str) -> float | None:
    """
    ``value`` over ``reference`` (the distilled or the teacher's return); where returns are negative, both
    measured from a random policy's.
    """
    low = RANDOM.get(env_id, 0.0)
    return (value - low) / (reference - low) if reference > low else None


def distill_options(config: str) -> dict[str, Any]:
    """The ``distill`` arguments a configuration sets (``distill_loss`` is ``loss``): runs alike share students."""
    options = CONFIGS[config]
    return {name: options[key] for key, name in DISTILL_KEYS.items() if key in options}


def distilled_student(
    folder: pathlib.Path, env_id: str, algo: str, options: dict[str, Any], seed: int, args: argparse.Namespace
) -> Any:
    """
    The student distilled student-driven from the teacher in ``folder`` for ``--distill-steps`` steps, with the
    ``distill`` arguments ``options``; with ``--students``, read from that folder when a run with the same
    teacher, student algorithm, options, budget and seed saved it there, else distilled and saved there (so
    configurations share one distillation).
    """
    file = None
    if args.students is not None:
        tags = "_".join(f"{key}-{value}" for key, value in sorted(options.items()))
        name = f"{folder.parent.name}_{folder.name}_{algo}_{tags or 'default'}_{args.distill_steps}_{seed}.pt"
        file = pathlib.Path(args.students) / name.replace("/", "-")
        if file.exists():
            return load_student(file, device="cpu")
    student = distill(
        str(folder),
        "MlpPolicy",
        make_vec_env(env_id, n_envs=4, seed=seed),
        args.distill_steps,
        collect="student",
        student_algo=algo,
        seed=seed,
        **{**options, "student_kwargs": {**STUDENTS[env_id], **options.get("student_kwargs", {})}},
    )
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        save_student(student, file)
    return student


def teacher_folder(teacher: str, args: argparse.Namespace) -> pathlib.Path:
    """The teacher's RL-Zoo run folder, under ``--zoo`` or among the published agents."""
    return (ZOO if args.zoo is None else pathlib.Path(args.zoo)) / teacher


def student_algo(config: str) -> str:
    """The family a configuration's student is distilled into: ``dqn_*`` configurations fine-tune with ``to_dqn``."""
    return "dqn" if config.startswith("dqn") else "ppo"


def student_of(teacher: str, config: str, seed: int, args: argparse.Namespace) -> tuple[Any, str, str]:
    """The distilled student a run starts from (:func:`distilled_student`), its environment id and algorithm."""
    th.set_num_threads(1)
    folder = teacher_folder(teacher, args)
    env_id = SavedAgent.find(folder).env_id
    assert env_id is not None, f"{folder}: no environment id recorded"
    algo = student_algo(config)
    return distilled_student(folder, env_id, algo, distill_options(config), seed, args), env_id, algo


def run(teacher: str, config: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    student, env_id, algo = student_of(teacher, config, seed, args)
    folder = teacher_folder(teacher, args)
    options = {key: value for key, value in CONFIGS[config].items() if key not in DISTILL_KEYS}
    lr_scale = options.pop("lr_scale", None)
    keeps_critic = options.pop("rollback_keeps_critic", True)
    if options.pop("teacher", False):
        options["teacher"] = str(folder)
    distilled = evaluate(student, env_id, args.episodes, student, n_envs=args.eval_envs)
    # The same student on other episodes: how far two evaluations of one policy differ (the noise floor).
    distilled_again = evaluate(student, env_id, args.episodes, student, seed=20_000, n_envs=args.eval_envs)
    greedy_probability = None
    if algo == "ppo":  # how sure the distilled student is of its greedy actions, on the states it visits
        observations = greedy_observations(
            student, wrap_env(make_vec_env(env_id, n_envs=4, seed=seed + 2), student), 256
        )
        with th.no_grad():
            probs = student.get_distribution(observations).distribution.probs  # type: ignore[union-attr]
        greedy_probability = float(probs.max(dim=-1).values.mean())
    n_envs, settings = teacher_settings(algo, env_id)
    settings.pop("policy")
    settings.pop("policy_kwargs", None)  # the teacher's architecture: the student keeps its own
    if lr_scale is not None:
        settings["learning_rate"] = scaled(settings.get("learning_rate", 3e-4), lr_scale)
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed + 1)
    if options.get("eval_env") == "own":
        options["eval_env"] = make_vec_env(env_id, n_envs=4, seed=seed + 30_000)
        options["eval_freq"] = args.eval_every
    if algo == "dqn":
        model = to_dqn(student, env, seed=seed, **settings, **options)
    else:
        finetuned = to_ppo(student, env, seed=seed, **settings, **options)
        finetuned.rollback_keeps_critic = keeps_critic
        model = finetuned
    callback = Evaluations(env_id, args.eval_every, args.episodes, student, args.eval_envs)
    if args.chunks:  # evaluate what each learn() call hands over
        for _ in range(args.steps // args.eval_every):
            model.learn(args.eval_every, reset_num_timesteps=False)
            callback.results.append(callback.evaluate())
    else:
        model.learn(args.steps, callback=callback)
    guarded = getattr(model, "rollback_below", None) is not None
    if guarded:  # what learn() hands over, judged when it returns
        callback.judged.append(callback.evaluate())
    # what learn() hands over, on the episodes the teacher plays for parity (PARITY_SEED)
    parity_return = (
        evaluate(model, env_id, args.parity_episodes, student, seed=PARITY_SEED, n_envs=args.eval_envs)
        if args.parity_episodes
        else None
    )
    # min_ratio: the policies the guard judged (and hands over); without a guard, every evaluation.
    # min_ratio_between: every --eval-every steps, what model.predict acts with then (with a guard, the
    # policy it last passed); min_ratio_candidate: the candidate PPO samples from and updates.
    floor = callback.judged if guarded else callback.results
    return {
        "teacher": teacher,
        "config": config,
        "seed": seed,
        "distilled": distilled,
        "distilled_other_episodes": distilled_again,
        "greedy_probability": greedy_probability,
        "evaluations": callback.results,
        "candidate_evaluations": callback.candidates,
        "judged": callback.judged,
        "start_return": getattr(model, "start_return", None),  # the guard's: the deterministic policy's at the start
        "rollbacks": getattr(model, "rollbacks", None),
        "min_ratio": ratio(min(value for _, value in floor), distilled, env_id),
        "min_ratio_between": ratio(min(value for _, value in callback.results), distilled, env_id),
        "min_ratio_candidate": ratio(min(value for _, value in callback.candidates), distilled, env_id)
        if callback.candidates
        else None,
        "final": floor[-1][1],
        "final_parity_episodes": parity_return,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=["dqn/CartPole-v1_1", "ppo/CartPole-v1_1"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--distill-steps", type=int, default=8_000)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument(
        "--eval-envs", type=int, default=1, help="environments per evaluation, side by side (a divisor of --episodes)"
    )
    parser.add_argument(
        "--parity-episodes",
        type=int,
        default=0,
        help="evaluate what learn() hands over and the teacher on the same episodes, this many, for parity "
        "(default: parity from the last evaluation against the teacher's --episodes)",
    )
    parser.add_argument("--zoo", default=None, help="folder of RL-Zoo runs (default: the published agents)")
    parser.add_argument(
        "--students",
        default=None,
        help="folder where distilled students are kept and reused by runs with the same teacher, budget and seed",
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--chunks",
        action="store_true",
        help="learn --eval-every steps per learn() call and evaluate what each call returns (default: evaluate "
        "the policy during one learn() call, whatever it is at that step)",
    )
    parser.add_argument("--name", default="", help="results/finetune_<name>.json")
    args = parser.parse_args()
    jobs = [(teacher, config, seed) for teacher in args.teachers for seed in args.seeds for config in args.configs]
    with ProcessPoolExecutor(args.jobs) as pool:
        if args.students is not None:  # each student distilled once, side by side, then shared by its runs
            first = {
                (t, seed, student_algo(c), repr(sorted(distill_options(c).items()))): (t, c, seed)
                for t, c, seed in reversed(jobs)
            }
            list(pool.map(student_of, *zip(*first.values(), strict=True), [args] * len(first)))
        runs = list(pool.map(run, *zip(*jobs, strict=True), [args] * len(jobs)))
    summary: dict[str, Any] = {}
    for teacher in args.teachers:
        folder = teacher_folder(teacher, args)
        model, agent = open_teacher(str(folder), device="cpu")
        env_id = agent.env_id if agent is not None else None
        assert env_id is not None
        statistics_env = teacher_env(model, agent, make_vec_env(env_id, n_envs=1, seed=10_000))
        teacher_return = float(
            np.mean(evaluate_policy(model, statistics_env, n_eval_episodes=args.episodes, deterministic=True)[0])
        )
        summary[f"{teacher} teacher"] = teacher_return
        final_key = "final"
        if args.parity_episodes:  # the teacher on the episodes each final policy played for parity
            parity_env = make_vec_env(env_id, n_envs=args.eval_envs, seed=PARITY_SEED)
            parity_env = teacher_env(model, agent, parity_env)
            teacher_return = float(
                np.mean(evaluate_policy(model, parity_env, n_eval_episodes=args.parity_episodes, deterministic=True)[0])
            )
            summary[f"{teacher} teacher_parity_episodes"] = teacher_return
            final_key = "final_parity_episodes"
        print(teacher, "teacher", summary[f"{teacher} teacher"])
        for config in args.configs:
            mine = [r for r in runs if r["teacher"] == teacher and r["config"] == config]
            ratios = [r["min_ratio"] for r in mine if r["min_ratio"] is not None]
            over_teacher = [ratio(r[final_key], teacher_return, env_id) for r in mine]
            summary[f"{teacher} {config}"] = {
                "distilled": [r["distilled"] for r in mine],
                # the distilled student on other episodes: two evaluations of one policy differ this much
                "distilled_other_episodes": [r.get("distilled_other_episodes") for r in mine],
                "rollbacks": [r.get("rollbacks") for r in mine],
                "min_ratio": ratios,
                "worst_min_ratio": min(ratios) if ratios else None,
                "worst_min_ratio_between": min(
                    (r["min_ratio_between"] for r in mine if r.get("min_ratio_between") is not None), default=None
                ),
                "worst_min_ratio_candidate": min(
                    (r["min_ratio_candidate"] for r in mine if r.get("min_ratio_candidate") is not None),
                    default=None,
                ),
                "final": [r["final"] for r in mine],
                "median_final": statistics.median(r["final"] for r in mine),
                # parity: the final return over the teacher's (both from a random policy's where returns are
                # negative); a run reaches it at PARITY or more
                "final_over_teacher": over_teacher,
                "at_parity": sum((value or 0.0) >= PARITY for value in over_teacher),
            }
            print(teacher, config, summary[f"{teacher} {config}"])
    settings = {key: value for key, value in vars(args).items() if key not in ("jobs", "name", "students")}
    settings["config_options"] = {config: CONFIGS[config] for config in args.configs}
    if args.zoo is not None:  # the runs' folder by name only (no machine path in a result)
        settings["zoo"] = pathlib.Path(args.zoo).name
    write_result(
        "finetune" + (f"_{args.name}" if args.name else ""), {"settings": settings, "summary": summary, "runs": runs}
    )


if __name__ == "__main__":
    main()
