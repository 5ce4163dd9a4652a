"""Why teacher-driven distillation trailed BC: the same data and minibatches, one factor changed at a time.

For each seed, the published PPO CartPole teacher (``tests/data/zoo-agents/ppo/CartPole-v1_1``) acts for
``--steps`` steps, sampling its actions as ``distill(collect="teacher")`` and ``imitation``'s rollouts do;
every variant then trains the same ``[8]`` ``ActorCriticPolicy`` (same initial weights) on exactly these
transitions, 4 samples per transition in minibatches of 128, and is evaluated on the same 30 greedy
episodes. The variants differ in one factor each:

- the loss: BC's (cross-entropy on the sampled actions, entropy bonus 1e-3, as ``imitation.algorithms.bc``)
  or distillation's KL to the teacher's whole action distribution;
- Adam's epsilon: torch's 1e-8 (``imitation``'s BC) or 1e-5 (what SB3's ``ActorCriticPolicy`` builds);
- the schedule: four shuffled passes after collection (BC) or interleaved, 4 x 128 samples drawn with
  replacement from what has been collected after every 128 new transitions (``distill``'s memory).

Then the package itself, ``distill(collect="teacher")`` from the same seed, at its default Adam epsilon and at
SB3's 1e-5 (its own collection, the same for both since the students do not act).

Paired over seeds (Wilcoxon signed-rank). Results: ``benchmarks/results/bc_ablation.json``.

    python benchmarks/bc_ablation.py --seeds 40          # about 15 minutes on one CPU core
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F
from common import write_result
from scipy.stats import wilcoxon
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from vs_imitation import ZOO, evaluation

from sb3_distill import distill
from sb3_distill.teachers import open_teacher, teacher_env

TEACHER = "ppo/CartPole-v1_1"
BATCH_SIZE, SAMPLES_PER_TRANSITION = 128, 4
#: name -> (loss, Adam eps, schedule)
VARIANTS = {
    "bc": ("ce", 1e-8, "after"),
    "kl eps1e-5 after": ("kl", 1e-5, "after"),
    "kl eps1e-8 after": ("kl", 1e-8, "after"),
    "kl eps1e-5 interleaved (distill before)": ("kl", 1e-5, "interleaved"),
    "kl eps1e-8 interleaved (distill now)": ("kl", 1e-8, "interleaved"),
    "ce eps1e-8 interleaved": ("ce", 1e-8, "interleaved"),
}
#: the package itself, ``distill(collect="teacher")`` on its own collection (the same for both: the students
#: do not act), with its default Adam epsilon and with SB3's actor-critic one
PACKAGE = {"distill() default (eps 1e-8)": None, "distill() eps 1e-5": {"eps": 1e-5}}
#: the paired comparisons reported: (a, b) -> a - b
PAIRS = [
    ("kl eps1e-8 after", "kl eps1e-5 after"),
    ("kl eps1e-8 interleaved (distill now)", "kl eps1e-5 interleaved (distill before)"),
    ("kl eps1e-5 after", "bc"),
    ("kl eps1e-8 after", "bc"),
    ("kl eps1e-8 interleaved (distill now)", "kl eps1e-8 after"),
    ("kl eps1e-8 interleaved (distill now)", "bc"),
    ("kl eps1e-5 interleaved (distill before)", "bc"),
    ("ce eps1e-8 interleaved", "bc"),
    ("distill() default (eps 1e-8)", "distill() eps 1e-5"),
]


def collect(model: Any, agent: Any, seed: int, steps: int) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """The teacher acting for ``steps`` steps, sampling its actions: observations, its logits, its actions."""
    env = teacher_env(model, agent, make_vec_env("CartPole-v1", n_envs=1, seed=seed), seed=seed)
    generator = th.Generator().manual_seed(seed)
    observations, logits, actions = [], [], []
    obs = env.reset()
    for _ in range(steps):
        tensor = th.as_tensor(obs, dtype=th.float32)
        with th.no_grad():
            scores = model.policy.get_distribution(tensor).distribution.logits
        action = th.multinomial(F.softmax(scores, dim=-1), 1, generator=generator).squeeze(-1)
        observations.append(tensor[0])
        logits.append(scores[0])
        actions.append(action[0])
        obs, _, _, _ = env.step(action.numpy())
    return th.stack(observations), th.stack(logits), th.stack(actions)


def minibatches(n: int, schedule: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Index minibatches: shuffled passes after collection, or drawn from the growing memory as ``distill`` does."""
    batches = []
    if schedule == "after":
        for _ in range(SAMPLES_PER_TRANSITION):
            order = rng.permutation(n)
            batches += [order[i : i + BATCH_SIZE] for i in range(0, n - BATCH_SIZE + 1, BATCH_SIZE)]
        return batches
    for collected in range(BATCH_SIZE, n + 1, BATCH_SIZE):
        drawn = rng.integers(0, collected, size=SAMPLES_PER_TRANSITION * BATCH_SIZE)
        batches += [drawn[i : i + BATCH_SIZE] for i in range(0, len(drawn), BATCH_SIZE)]
    return batches


def train(data: tuple[th.Tensor, th.Tensor, th.Tensor], variant: str, seed: int) -> ActorCriticPolicy:
    loss_name, eps, schedule = VARIANTS[variant]
    observations, logits, actions = data
    env = make_vec_env("CartPole-v1", n_envs=1)
    th.manual_seed(seed)  # the same initial weights for every variant of a seed
    student = ActorCriticPolicy(
        env.observation_space, env.action_space, lambda _: 1e-3, net_arch=[8], optimizer_kwargs={"eps": eps}
    )
    for batch in minibatches(len(observations), schedule, np.random.default_rng(seed)):
        index = th.as_tensor(batch)
        distribution = student.get_distribution(observations[index])
        log_probs = F.log_softmax(distribution.distribution.logits, dim=-1)
        if loss_name == "ce":  # BC: the sampled action's negative log-likelihood, minus 1e-3 x entropy
            loss = -log_probs.gather(1, actions[index, None]).mean() - 1e-3 * distribution.entropy().mean()
        else:  # KL(teacher || student) over the teacher's whole distribution
            teacher_log_probs = F.log_softmax(logits[index], dim=-1)
            loss = (teacher_log_probs.exp() * (teacher_log_probs - log_probs)).sum(dim=-1).mean()
        student.optimizer.zero_grad()
        loss.backward()
        student.optimizer.step()
    return student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=30)
    args = parser.parse_args()
    th.set_num_threads(1)
    model, agent = open_teacher(str(ZOO / TEACHER), device="cpu")
    model.policy.set_training_mode(False)
    rows = []
    for seed in range(args.seeds):
        data = collect(model, agent, seed, args.steps)
        row: dict[str, Any] = {"seed": seed}
        for variant in VARIANTS:
            row[variant] = evaluation(TEACHER, train(data, variant, seed), None, args.episodes)
        for variant, optimizer_kwargs in PACKAGE.items():
            student = distill(
                ZOO / TEACHER,
                "MlpPolicy",
                make_vec_env("CartPole-v1", n_envs=1, seed=seed),
                args.steps,
                collect="teacher",
                student_kwargs={
                    "net_arch": [8],
                    **({} if optimizer_kwargs is None else {"optimizer_kwargs": optimizer_kwargs}),
                },
                seed=seed,
                device="cpu",
            )
            row[variant] = evaluation(TEACHER, student, student, args.episodes)
        print(row, flush=True)
        rows.append(row)
    medians = {variant: statistics.median(row[variant] for row in rows) for variant in [*VARIANTS, *PACKAGE]}
    pairs = []
    for a, b in PAIRS:
        differences = [row[a] - row[b] for row in rows]
        pairs.append(
            {
                "a": a,
                "b": b,
                "median_difference": statistics.median(differences),
                "a_better_in": sum(d > 0 for d in differences),
                "seeds": len(differences),
                "wilcoxon_p": float(wilcoxon(differences).pvalue),
            }
        )
        print(pairs[-1], flush=True)
    write_result(
        "bc_ablation",
        {
            "benchmark": "bc_ablation",
            "teacher": TEACHER,
            "settings": {**vars(args), "batch_size": BATCH_SIZE, "samples_per_transition": SAMPLES_PER_TRANSITION},
            "variants": {
                name: dict(zip(("loss", "adam_eps", "schedule"), v, strict=True)) for name, v in VARIANTS.items()
            },
            "median_returns": medians,
            "pairs": pairs,
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
