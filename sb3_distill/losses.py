"""Distillation losses: pure functions of (student output, teacher target).

Every policy loss has the signature ``loss(student_scores, teacher_scores, temperature)`` and
returns the mean over the batch. Scores are per-action logits or Q-values of shape
``(batch, n_actions)``; students packed together (:mod:`~sb3_distill.packing`) give
``(batch, n_students, n_actions)`` against the teacher's ``(batch, 1, n_actions)``, and every loss then
returns one value per student, ``(n_students,)``: losses reduce over the batch dimension only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch as th
import torch.nn.functional as F

from sb3_distill.outputs import ACTIONS, GAUSSIAN, LOGITS, Q_VALUES, SQUASHED_GAUSSIAN, ScoreKind

PolicyLoss = Callable[[th.Tensor, th.Tensor, float], th.Tensor]

#: Default temperature per kind of teacher score: Q-values are sharpened with 0.01 as in
#: Rusu et al., "Policy Distillation" (2015); logits are already a distribution's parameters.
DEFAULT_TEMPERATURE = {Q_VALUES: 0.01, LOGITS: 1.0, GAUSSIAN: 1.0, ACTIONS: 1.0, SQUASHED_GAUSSIAN: 1.0}

#: The losses that make sense per kind of teacher output, the first being the default.
LOSSES_FOR_KIND = {
    LOGITS: ("kl", "mse", "nll"),
    Q_VALUES: ("kl", "mse", "nll"),
    GAUSSIAN: ("kl", "mse"),  # KL between Gaussians, or MSE on their means
    ACTIONS: ("mse",),  # TD3's deterministic actions
    # SAC: MSE on the actions, or KL between the Gaussians before the tanh (SAC students; benchmarks/continuous.py:
    # slower at 20k steps, 0.46 against 0.97 of the teacher, and level from 40k: 1.00 against 0.99)
    SQUASHED_GAUSSIAN: ("mse", "kl"),
}


def kl_divergence(student_scores: th.Tensor, teacher_scores: th.Tensor, temperature: float) -> th.Tensor:
    """
    KL(teacher || student) per observation.

    :param student_scores: student logits or Q-values; the student's distribution is their softmax
    :param teacher_scores: teacher logits or Q-values; the teacher's is ``softmax(teacher_scores / temperature)``
    :param temperature: softening temperature applied to the teacher's scores
    :return: shape ``(batch,)``
    """
    teacher_log_probs = F.log_softmax(teacher_scores / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_scores, dim=-1)
    # sum_a p_T(a) * (log p_T(a) - log p_S(a))
    return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=-1)


def kl_loss(student_scores: th.Tensor, teacher_scores: th.Tensor, temperature: float) -> th.Tensor:
    """
    KL(teacher || student) between action distributions.

    The teacher's distribution is ``softmax(teacher_scores / temperature)``; the student's is
    ``softmax(student_scores)`` (Rusu et al., 2015, eq. 3).

    :param student_scores: student logits or Q-values
    :param teacher_scores: teacher logits or Q-values
    :param temperature: softening temperature applied to the teacher's scores
    :return: mean KL divergence over the batch
    """
    return kl_divergence(student_scores, teacher_scores, temperature).mean(dim=0)


def mse_loss(student_scores: th.Tensor, teacher_scores: th.Tensor, temperature: float) -> th.Tensor:
    """
    Mean squared error between student and teacher scores (Q-values or logits); the temperature is unused.

    :param student_scores: student logits or Q-values
    :param teacher_scores: teacher logits or Q-values
    :param temperature: ignored
    :return: mean over batch and actions
    """
    return ((student_scores - teacher_scores) ** 2).mean(dim=-1).mean(dim=0)


def nll_loss(student_scores: th.Tensor, teacher_scores: th.Tensor, temperature: float) -> th.Tensor:
    """
    Negative log-likelihood of the teacher's greedy action under the student; the temperature is unused.

    :param student_scores: student logits or Q-values
    :param teacher_scores: teacher logits or Q-values
    :param temperature: ignored
    :return: mean cross-entropy over the batch
    """
    log_probs = F.log_softmax(student_scores, dim=-1)
    greedy = teacher_scores.argmax(dim=-1, keepdim=True).expand(*log_probs.shape[:-1], 1)
    return -log_probs.gather(-1, greedy).squeeze(-1).mean(dim=0)


def gaussian_kl_divergence(
    student_mean: th.Tensor, student_log_std: th.Tensor, teacher_mean: th.Tensor, teacher_log_std: th.Tensor
) -> th.Tensor:
    """
    KL(teacher || student) per observation between diagonal Gaussian policies, summed over action dimensions.

    :param student_mean: shape ``(batch, action_dim)``
    :param student_log_std: same shape
    :param teacher_mean: same shape
    :param teacher_log_std: same shape
    :return: shape ``(batch,)``
    """
    # per dimension: log(s_S / s_T) + (s_T^2 + (m_T - m_S)^2) / (2 s_S^2) - 1/2
    variance_ratio = th.exp(2 * (teacher_log_std - student_log_std))
    mean_term = (teacher_mean - student_mean) ** 2 * th.exp(-2 * student_log_std)
    return (student_log_std - teacher_log_std + 0.5 * (variance_ratio + mean_term) - 0.5).sum(dim=-1)


def gaussian_kl_loss(
    student_mean: th.Tensor, student_log_std: th.Tensor, teacher_mean: th.Tensor, teacher_log_std: th.Tensor
) -> th.Tensor:
    """:return: :func:`gaussian_kl_divergence` averaged over the batch."""
    return gaussian_kl_divergence(student_mean, student_log_std, teacher_mean, teacher_log_std).mean()


def value_loss(student_values: th.Tensor, teacher_values: th.Tensor) -> th.Tensor:
    """
    Mean squared error between the student's and the teacher's state values.

    :param student_values: shape ``(batch,)`` (or ``(batch, n_students)``)
    :param teacher_values: shape ``(batch,)`` (or ``(batch, 1)``)
    :return: mean over the batch
    """
    return ((student_values - teacher_values) ** 2).mean(dim=0)


LOSSES: dict[str, PolicyLoss] = {"kl": kl_loss, "mse": mse_loss, "nll": nll_loss}


def get_loss(name: str) -> PolicyLoss:
    """
    A policy loss by name.

    :param name: one of ``"kl"``, ``"mse"``, ``"nll"``
    :return: the loss function
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: expected one of {sorted(LOSSES)}")
    return LOSSES[name]


def loss_for_kind(name: str | None, kind: ScoreKind | str) -> str:
    """
    The loss to use for a kind of teacher output, checked.

    :param name: the user's choice (``None``: the kind's default: ``"kl"``, or ``"mse"`` for SAC/TD3 actions)
    :param kind: ``"logits"``, ``"q_values"``, ``"gaussian"`` or ``"actions"``
    :return: the loss name
    """
    allowed = LOSSES_FOR_KIND[ScoreKind(kind)]
    if name is None:
        return allowed[0]
    get_loss(name)
    if name not in allowed:
        raise ValueError(f"loss {name!r} does not apply to a teacher whose outputs are {kind}: use one of {allowed}")
    return name
