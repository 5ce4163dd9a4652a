"""Proximal Policy Distillation (Spigler, 2024): PPO on the environment's reward plus a distillation term.

The student collects its own rollouts (student-driven distillation) and is trained with PPO's loss
plus, on the same minibatches,

    lambda * E[ max(r, 1 - clip_range) * KL(teacher(.|s) || student(.|s)) ],

where ``r`` is PPO's probability ratio: the distillation term is weighted like PPO's surrogate, so a
minibatch that PPO's clipping would stop does not drag the student further either. The student can
thus follow the teacher where the teacher is good and improve on it with its own rewards.

:meth:`ProximalPolicyDistillation.train` is SB3's ``PPO.train`` with the distillation term added where
the loss is computed (marked ``# PPD``); the teacher's outputs come from :class:`~sb3_distill.Teacher`
and the divergences from :mod:`sb3_distill.losses`, as in the other distillation modes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_distill.losses import DEFAULT_TEMPERATURE, gaussian_kl_divergence, kl_divergence
from sb3_distill.outputs import ACTIONS, policy_outputs
from sb3_distill.spaces import spaces_mismatch
from sb3_distill.teachers import Teacher, open_teacher, teacher_normalization


class ProximalPolicyDistillation(PPO):
    """
    PPO whose loss adds a distillation term towards a teacher (Spigler, "Proximal Policy Distillation", 2024).

    Takes every ``PPO`` argument; the policy (``"MlpPolicy"``, ``"CnnPolicy"`` with ``policy_kwargs``) is
    the student. The teacher may be a PPO or A2C model (discrete or Gaussian actions), or a DQN or
    QR-DQN model (its Q-values softened by ``temperature``), loaded or as a zip path. ``save`` leaves the
    teacher out: after ``load``, call :meth:`set_teacher` before learning again.

    :param policy: the student's policy (alias or class)
    :param env: the environment, as the teacher was trained on it
    :param teacher: the teacher (model or zip path)
    :param distill_lambda: weight of the distillation term, a float or a schedule of the remaining progress
    :param temperature: softens a discrete teacher's scores (``None``: 1.0 for logits, 0.01 for Q-values)
    :param ppo_kwargs: ``PPO``'s arguments (``n_steps``, ``batch_size``, ``learning_rate``, ``policy_kwargs``...)
    """

    def __init__(
        self,
        policy: Any,
        env: Any,
        teacher: BaseAlgorithm | str | os.PathLike[str] | None = None,
        distill_lambda: float | Schedule = 1.0,
        temperature: float | None = None,
        **ppo_kwargs: Any,
    ) -> None:
        super().__init__(policy, env, **ppo_kwargs)
        self.distill_lambda = distill_lambda
        self.temperature = temperature
        self.teacher: Teacher | None = None
        if teacher is not None:
            self.set_teacher(teacher)

    def set_teacher(self, teacher: BaseAlgorithm | str | os.PathLike[str]) -> None:
        """
        Set (or replace) the teacher, checked against the student's spaces.

        :param teacher: a model, the path of its zip, or an RL-Zoo run folder
        """
        model, agent = open_teacher(teacher, device=self.device)
        view = Teacher(model)
        if view.kind == ACTIONS:
            raise TypeError("PPD distils action distributions: SAC and TD3 teachers have none (use distill() instead)")
        difference = spaces_mismatch(self.policy, view)
        if difference is not None:
            raise ValueError(
                f"the teacher acts on {view.observation_space} -> {view.action_space}, the student on "
                f"{self.policy.observation_space} -> {self.action_space}: {difference}"
            )
        if teacher_normalization(model, agent) is not None and self.get_vec_normalize_env() is None:
            raise ValueError(
                "the teacher acts on VecNormalize'd observations and the student's env gives raw ones: wrap the "
                "student's env in the teacher's statistics (sb3_distill.agents.load_vec_normalize(path, env) reads "
                "RL-Zoo's vecnormalize.pkl, gym-era ones included)"
            )
        self.teacher = view

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "teacher"]

    def _lambda_now(self) -> float:
        value = self.distill_lambda
        return float(value(self._current_progress_remaining) if callable(value) else value)

    def _distillation_divergence(self, obs: th.Tensor) -> th.Tensor:
        """KL(teacher || student) per observation of a minibatch."""
        assert self.teacher is not None
        targets = self.teacher.targets(obs, with_values=False)  # no gradients, teacher in eval mode
        student = policy_outputs(self.policy, obs, with_values=False)
        if targets.log_std is not None:  # Gaussian policies
            assert student.log_std is not None
            return gaussian_kl_divergence(student.scores, student.log_std, targets.scores, targets.log_std)
        temperature = self.temperature if self.temperature is not None else DEFAULT_TEMPERATURE[self.teacher.kind]
        return kl_divergence(student.scores, targets.scores, temperature)

    def train(self) -> None:
        """Update the student on the rollout buffer: PPO's loss plus the PPD distillation term."""
        if self.teacher is None:
            raise RuntimeError("no teacher: pass teacher= or call set_teacher() (save() leaves the teacher out)")
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        distill_lambda = self._lambda_now()  # PPD

        entropy_losses, pg_losses, value_losses, clip_fractions, distill_losses = [], [], [], [], []
        approx_kl_divs: list[float] = []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = rollout_data.actions.long().flatten()
                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
                values = values.flatten()
                advantages = rollout_data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # PPO's clipped surrogate
                ratio = th.exp(log_prob - rollout_data.old_log_prob)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
                pg_losses.append(policy_loss.item())
                clip_fractions.append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())

                if self.clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())
                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                entropy_losses.append(entropy_loss.item())

                # PPD: KL(teacher || student), weighted by the ratio clipped from below only. Both are
                # non-negative, so max(r * kl, clip(r) * kl) = max(r, 1 - clip_range) * kl.
                divergence = self._distillation_divergence(rollout_data.observations)
                distill_loss = (th.clamp(ratio, min=1 - clip_range) * divergence).mean()
                distill_losses.append(distill_loss.item())

                loss = (
                    policy_loss
                    + self.ent_coef * entropy_loss
                    + self.vf_coef * value_loss
                    + distill_lambda * distill_loss  # PPD
                )

                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(float(approx_kl_div))
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        self.logger.record("distill/loss", np.mean(distill_losses))  # PPD
        self.logger.record("distill/lambda", distill_lambda)
