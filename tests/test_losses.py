import pytest
import torch as th
import torch.nn.functional as F

from sb3_distill.losses import DEFAULT_TEMPERATURE, get_loss, kl_loss, mse_loss, nll_loss, value_loss


def test_kl_matches_the_definition():
    gen = th.Generator().manual_seed(0)
    student, teacher = th.randn(32, 5, generator=gen), th.randn(32, 5, generator=gen)
    p_t = F.softmax(teacher / 0.5, dim=-1)
    expected = (p_t * (p_t.log() - F.log_softmax(student, dim=-1))).sum(-1).mean()
    assert th.allclose(kl_loss(student, teacher, 0.5), expected, atol=1e-6)
    assert kl_loss(teacher, teacher, 1.0).abs() < 1e-6
    assert kl_loss(student, teacher, 1.0) > 0


def test_low_temperature_sharpens_the_teacher_towards_its_greedy_action():
    teacher = th.tensor([[1.00, 1.05, 0.90]])  # Q-values close together, as a DQN teacher's are
    student = th.tensor([[0.0, 5.0, 0.0]])  # confident in the greedy action
    assert kl_loss(student, teacher, DEFAULT_TEMPERATURE["q_values"]) < kl_loss(student, teacher, 1.0)
    assert DEFAULT_TEMPERATURE == {"q_values": 0.01, "logits": 1.0}


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
