"""Proximal Policy Distillation (Spigler, 2024): PPO on the environment's reward plus a distillation term.

The student collects its own rollouts (student-driven distillation) and is trained with PPO's loss
plus, on the same minibatches,

    lambda * E[ max(r, 1 - clip_range) * KL(teacher(.|s) || student(.|s)) ],

where ``r`` is PPO's probability ratio: the distillation term is weighted like PPO's surrogate, so a
minibatch that PPO's clipping would stop does not drag the student further either. The student can
thus follow the teacher where the teacher is good and improve on it with its own rewards.

:meth:`ProximalPolicyDistillation.train` is SB3's ``PPO.train``, its comments kept, with the distillation term
added where the loss is computed (the insertions marked ``# PPD``), as sb3-contrib's ``MaskablePPO`` marks its
own. The teacher's outputs are computed once per rollout (:class:`TeacherRolloutBuffer`) by
:class:`~sb3_distill.Teacher`, and the divergences come from :mod:`sb3_distill.losses`, as in the other modes.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecNormalize
from torch.nn import functional as F

from sb3_distill.losses import DEFAULT_TEMPERATURE, gaussian_kl_divergence, kl_divergence
from sb3_distill.outputs import ACTIONS, SQUASHED_GAUSSIAN, policy_outputs
from sb3_distill.spaces import spaces_mismatch
from sb3_distill.teachers import Teacher, open_teacher, teacher_normalization


class TeacherRolloutBufferSamples(NamedTuple):
    """SB3's ``RolloutBufferSamples`` with the teacher's outputs for the same observations."""

    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    teacher_scores: th.Tensor
    teacher_log_std: th.Tensor | None


class TeacherRolloutBuffer(RolloutBuffer):
    """
    A rollout buffer whose samples carry the teacher's outputs, computed once per rollout (not per minibatch
    and epoch), as sb3-contrib's ``MaskableRolloutBuffer`` carries action masks.
    """

    teacher_scores: th.Tensor | None = None
    teacher_log_std: th.Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self.teacher_scores = self.teacher_log_std = None

    def label(self, teacher: Teacher) -> None:
        """The teacher's outputs for every observation of the rollout, in the order ``get`` flattens them."""
        if self.teacher_scores is not None:
            return
        observations = self.observations if self.generator_ready else self.swap_and_flatten(self.observations)
        targets = teacher.targets(th.as_tensor(observations, device=teacher.device), with_values=False)
        self.teacher_scores, self.teacher_log_std = targets.scores.to(self.device), targets.log_std
        if self.teacher_log_std is not None:
            self.teacher_log_std = self.teacher_log_std.to(self.device)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> TeacherRolloutBufferSamples:
        samples = super()._get_samples(batch_inds, env)
        if self.teacher_scores is None:  # not labelled: PPO's own samples (fine-tuning with the anchor faded)
            return samples  # type: ignore[return-value]
        index = th.as_tensor(batch_inds, device=self.teacher_scores.device)
        log_std = None if self.teacher_log_std is None else self.teacher_log_std[index]
        return TeacherRolloutBufferSamples(*samples, self.teacher_scores[index], log_std)


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
        buffer_class = ppo_kwargs.setdefault("rollout_buffer_class", TeacherRolloutBuffer)
        if not (isinstance(buffer_class, type) and issubclass(buffer_class, TeacherRolloutBuffer)):
            raise TypeError(
                f"rollout_buffer_class must be TeacherRolloutBuffer or a subclass (its samples carry the teacher's "
                f"outputs), got {buffer_class!r}"
            )
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
        if view.kind in (ACTIONS, SQUASHED_GAUSSIAN):
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

    def _distillation_divergence(self, rollout_data: TeacherRolloutBufferSamples) -> th.Tensor:
        """KL(teacher || student) per observation of a minibatch (the teacher's outputs come with the samples)."""
        assert self.teacher is not None
        student = policy_outputs(self.policy, rollout_data.observations, with_values=False)
        if rollout_data.teacher_log_std is not None:  # Gaussian policies
            assert student.log_std is not None
            return gaussian_kl_divergence(
                student.scores, student.log_std, rollout_data.teacher_scores, rollout_data.teacher_log_std
            )
        temperature = self.temperature if self.temperature is not None else DEFAULT_TEMPERATURE[self.teacher.kind]
        return kl_divergence(student.scores, rollout_data.teacher_scores, temperature)

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer.
        """
        if self.teacher is None:  # PPD
            raise RuntimeError("no teacher: pass teacher= or call set_teacher() (save() leaves the teacher out)")
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        distill_lambda = self._lambda_now()  # PPD
        assert isinstance(self.rollout_buffer, TeacherRolloutBuffer)  # PPD
        self.rollout_buffer.label(self.teacher)  # PPD: the teacher's outputs, once per rollout

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions = []
        distill_losses = []  # PPD

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    # Convert discrete action from float to long
                    actions = rollout_data.actions.long().flatten()

                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
                values = values.flatten()
                # Normalize advantage
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy, should be one at the first iteration
                ratio = th.exp(log_prob - rollout_data.old_log_prob)

                # clipped surrogate loss
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()

                # Logging
                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)

                if self.clip_range_vf is None:
                    # No clipping
                    values_pred = values
                else:
                    # Clip the difference between old and new value
                    # NOTE: this depends on the reward scaling
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                # Value loss using the TD(gae_lambda) target
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                # Entropy loss favor exploration
                if entropy is None:  # noqa: SIM108  (SB3's own form, kept)
                    # Approximate entropy when no analytical form
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)

                entropy_losses.append(entropy_loss.item())

                # PPD: KL(teacher || student), weighted by the ratio clipped from below only. Both are
                # non-negative, so max(r * kl, clip(r) * kl) = max(r, 1 - clip_range) * kl.
                divergence = self._distillation_divergence(rollout_data)  # type: ignore[arg-type]
                distill_loss = (th.clamp(ratio, min=1 - clip_range) * divergence).mean()
                distill_losses.append(distill_loss.item())

                loss = (
                    policy_loss
                    + self.ent_coef * entropy_loss
                    + self.vf_coef * value_loss
                    + distill_lambda * distill_loss  # PPD
                )

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and discussion in PR #419: https://github.com/DLR-RM/stable-baselines3/pull/419
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs
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
