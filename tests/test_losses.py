import pytest
import torch as th
import torch.nn.functional as F

from sb3_distill.losses import (
    DEFAULT_TEMPERATURE,
    gaussian_kl_loss,
    get_loss,
    kl_loss,
    loss_for_kind,
    mse_loss,
    nll_loss,
    value_loss,
)


def test_kl_matches_the_definition():
    gen = th.Generator().manual_seed(0)
    student, teacher = th.randn(32, 5, generator=gen), th.randn(32, 5, generator=gen)
    p_t = F.softmax(teacher / 0.5, dim=-1)
    expected = (p_t * (p_t.log() - F.log_softmax(student, dim=-1))).sum(-1).mean()
    assert th.allclose(kl_loss(student, teacher, 0.5), expected, atol=1e-6)
    assert kl_loss(teacher, teacher, 1.0).abs() < 1e-6


def test_low_temperature_sharpens_the_teacher_towards_its_greedy_action():
    teacher = th.tensor([[1.00, 1.05, 0.90]])  # Q-values close together, as a DQN teacher's are
    student = th.tensor([[0.0, 5.0, 0.0]])  # confident in the greedy action
    assert kl_loss(student, teacher, DEFAULT_TEMPERATURE["q_values"]) < kl_loss(student, teacher, 1.0)
    assert DEFAULT_TEMPERATURE["q_values"] == 0.01
    assert DEFAULT_TEMPERATURE["logits"] == 1.0


def test_mse_nll_and_value():
    student, teacher = th.tensor([[1.0, 2.0]]), th.tensor([[3.0, 2.0]])
    assert mse_loss(student, teacher, 1.0).item() == pytest.approx(2.0)
    assert nll_loss(student, teacher, 1.0).item() == pytest.approx(F.cross_entropy(student, th.tensor([0])).item())
    assert value_loss(th.tensor([1.0, 3.0]), th.tensor([2.0, 3.0])).item() == pytest.approx(0.5)


def test_losses_by_name():
    assert get_loss("kl") is kl_loss
    assert get_loss("mse") is mse_loss
    assert get_loss("nll") is nll_loss
    with pytest.raises(ValueError, match=r"unknown loss 'xent'.*'kl', 'mse', 'nll'"):
        get_loss("xent")


def test_gaussian_kl_is_torch_kl_between_diagonal_gaussians():
    generator = th.Generator().manual_seed(0)
    s_mean, t_mean, s_log_std, t_log_std = (th.randn(5, 3, generator=generator) for _ in range(4))
    expected = th.distributions.kl_divergence(
        th.distributions.Normal(t_mean, t_log_std.exp()), th.distributions.Normal(s_mean, s_log_std.exp())
    )
    loss = gaussian_kl_loss(s_mean, s_log_std, t_mean, t_log_std)
    assert loss.item() == pytest.approx(expected.sum(dim=-1).mean().item(), rel=1e-5)
    assert gaussian_kl_loss(t_mean, t_log_std, t_mean, t_log_std).item() == pytest.approx(0.0, abs=1e-6)


def test_losses_per_kind_of_teacher():
    assert loss_for_kind(None, "q_values") == "kl"
    assert loss_for_kind(None, "actions") == "mse"  # SAC/TD3: their deterministic actions
    assert loss_for_kind("mse", "gaussian") == "mse"
    with pytest.raises(ValueError, match=r"loss 'kl' does not apply to a teacher whose outputs are actions"):
        loss_for_kind("kl", "actions")
    with pytest.raises(ValueError, match=r"loss 'nll' does not apply"):
        loss_for_kind("nll", "gaussian")
