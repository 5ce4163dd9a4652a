"""Can DQN fine-tune a distilled Q-network if a large-margin loss holds its greedy actions? (An experiment.)

``to_dqn`` warns that DQN's TD targets pull a KL-distilled Q-network's greedy actions apart (its outputs
are softmax logits, not Q-values). This script tries the remedy of DQfD (Hester et al., 2018): DQN's TD
loss plus ``coef * E[max_a (Q(s, a) + margin * [a != a_E]) - Q(s, a_E)]``, where ``a_E`` is the distilled
student's greedy action, the weight ``coef`` constant or fading to 0 over ``--fade`` steps. The class
below is the experiment only; it is not part of the package.

For each seed: RL-Zoo's published DQN CartPole agent is distilled student-driven (8k steps) into a [16]
Q-network, which DQN (RL-Zoo's CartPole settings, ``exploration`` constant) fine-tunes for 50k steps,
learning 5k steps per ``learn`` call and evaluating the greedy policy after each (30 episodes). Results:
``benchmarks/results/to_dqn_margin.json``:

    python benchmarks/finetune_dqn_margin.py --jobs 2
"""

from __future__ import annotations

import argparse
import copy
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch as th
from common import write_result
from finetune import STUDENTS, ZOO, evaluate
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env
from torch.nn import functional as F

from sb3_distill import distill
from sb3_distill.finetune import _policy_kwargs
from sb3_distill.zoo import teacher_settings

#: name: (margin weight, steps it fades over (0: constant), exploration)
CONFIGS = {
    "margin_constant": (1.0, 0, 0.05),
    "margin_fade20k": (1.0, 20_000, 0.05),
    "margin_fade20k_eps02": (1.0, 20_000, 0.2),
    "no_margin": (0.0, 0, 0.05),
}


class MarginDQN(DQN):
    """DQN whose loss adds a large-margin term towards a frozen Q-network's greedy actions (DQfD's J_E)."""

    def __init__(self, *args: Any, coef: float, fade: int, margin: float = 0.8, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.coef, self.fade, self.margin = coef, fade, margin
        self.anchor: th.nn.Module | None = None

    def margin_weight(self) -> float:
        if self.fade == 0:
            return self.coef
        return self.coef * max(0.0, 1.0 - self.num_timesteps / self.fade)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        assert self.anchor is not None
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        weight = self.margin_weight()
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            with th.no_grad():
                next_q = self.q_net_target(data.next_observations).max(dim=1).values.reshape(-1, 1)
                target = data.rewards + (1 - data.dones) * self.gamma * next_q
            q_values = self.q_net(data.observations)
            loss = F.smooth_l1_loss(q_values.gather(1, data.actions.long()), target)
            if weight > 0:
                with th.no_grad():
                    expert = self.anchor(data.observations).argmax(dim=1, keepdim=True)
                margins = th.full_like(q_values, self.margin).scatter(1, expert, 0.0)
                large_margin = (q_values + margins).max(dim=1).values - q_values.gather(1, expert).squeeze(1)
                loss = loss + weight * large_margin.mean()
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps


def run(config: str, seed: int) -> dict[str, Any]:
    th.set_num_threads(1)
    coef, fade, exploration = CONFIGS[config]
    folder = ZOO / "dqn" / "CartPole-v1_1"
    student = distill(
        str(folder),
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=4, seed=seed),
        8_000,
        collect="student",
        student_algo="dqn",
        student_kwargs=STUDENTS["CartPole-v1"],
        seed=seed,
    )
    distilled = evaluate(student, "CartPole-v1", 30)
    n_envs, settings = teacher_settings("dqn", "CartPole-v1")
    settings.pop("policy")
    settings.pop("policy_kwargs", None)
    settings.update(exploration_initial_eps=exploration, exploration_final_eps=exploration)
    model = MarginDQN(
        type(student),
        make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed + 1),
        policy_kwargs=_policy_kwargs(student),
        seed=seed,
        coef=coef,
        fade=fade,
        **settings,
    )
    model.policy.load_state_dict(student.state_dict())
    model.q_net_target.load_state_dict(model.q_net.state_dict())
    model.anchor = copy.deepcopy(model.q_net).requires_grad_(False)
    evaluations = []
    for _ in range(10):
        model.learn(5_000, reset_num_timesteps=False)
        evaluations.append((model.num_timesteps, evaluate(model.policy, "CartPole-v1", 30)))
    returns = [value for _, value in evaluations]
    return {
        "config": config,
        "seed": seed,
        "distilled": distilled,
        "evaluations": evaluations,
        "min_ratio": min(returns) / distilled,
        "final": returns[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    jobs = [(config, seed) for config in args.configs for seed in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, *zip(*jobs, strict=True)))
    summary = {}
    for config in args.configs:
        mine = [r for r in runs if r["config"] == config]
        summary[config] = {
            "distilled": [r["distilled"] for r in mine],
            "min_ratio": [r["min_ratio"] for r in mine],
            "final": [r["final"] for r in mine],
        }
        print(config, summary[config])
    settings = {"seeds": args.seeds, "configs": {name: CONFIGS[name] for name in args.configs}, "steps": 50_000}
    settings["teacher"] = "dqn/CartPole-v1_1 (RL-Zoo's published agent)"
    write_result("to_dqn_margin", {"settings": settings, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
