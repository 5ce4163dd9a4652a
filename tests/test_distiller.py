"""The shared update step, on synthetic teachers (untrained SB3 policies): fast, exact, no environment run."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from sb3_contrib import QRDQN
from stable_baselines3 import DQN, PPO

from sb3_distill import distill, ladder
from sb3_distill.distiller import DistillConfig, Distiller
from sb3_distill.outputs import count_acting_parameters, policy_outputs
from sb3_distill.students import make_student
from sb3_distill.teachers import TARGET_CHUNK_SIZE, Teacher
from tests.conftest import kl_to_teacher


def synthetic_teacher(algo=PPO, env_id: str = "CartPole-v1", **kwargs):
    """An untrained SB3 model whose policy gives well-defined, non-uniform targets."""
    model = algo("MlpPolicy", env_id, seed=0, **kwargs)
    if algo is PPO and env_id == "CartPole-v1":
        with th.no_grad():  # logits that depend strongly on the pole's angle and velocity
            model.policy.action_net.weight.mul_(300.0)
    return model


def observations(n: int = 512, seed: int = 0) -> th.Tensor:
    return th.as_tensor(np.random.default_rng(seed).normal(scale=0.5, size=(n, 4)).astype(np.float32))


def distiller_for(teacher, n_students: int = 1, student: str = "MlpPolicy", **config) -> Distiller:
    view = Teacher(teacher)
    students = {
        f"s{i}": make_student(
            student,
            view.observation_space,
            view.action_space,
            teacher.policy_aliases,
            student_kwargs={"net_arch": [16]},
            seed=i,
        )
        for i in range(n_students)
    }
    return Distiller(view, students, DistillConfig(**config), seed=0)


def test_an_update_moves_every_student_towards_the_teacher():
    teacher = synthetic_teacher()
    distiller = distiller_for(teacher, n_students=2, epochs=30, batch_size=64)
    obs = observations()
    before = {name: kl_to_teacher(teacher, s, obs.numpy(), 1.0) for name, s in distiller.students.items()}
    metrics = distiller.update(obs)
    for name, student in distiller.students.items():
        assert kl_to_teacher(teacher, student, obs.numpy(), 1.0) < 0.3 * before[name]
        assert metrics["students"][name]["skipped_updates"] == 0


def test_targets_are_computed_once_per_batch_for_all_students_and_epochs(monkeypatch):
    teacher = synthetic_teacher()
    distiller = distiller_for(teacher, n_students=3, epochs=4, batch_size=64)
    calls = []
    original = Teacher.targets
    monkeypatch.setattr(Teacher, "targets", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    distiller.update(observations())
    assert len(calls) == 1


@pytest.mark.parametrize("loss", ["kl", "nll", "mse"])
def test_non_finite_target_rows_are_left_out_and_counted(loss):
    teacher = synthetic_teacher()
    distiller = distiller_for(teacher, loss=loss, epochs=2, batch_size=64)
    obs = observations(640)
    targets = Teacher(teacher).targets(obs)
    bad = np.arange(0, 640, 32)  # 20 rows, 3%: one in most minibatches
    targets.scores[bad[::2], 0] = float("nan")
    targets.values[bad[1::2]] = float("inf")
    with pytest.warns(RuntimeWarning, match="20 of 640 observations have non-finite teacher outputs"):
        metrics = distiller.update(obs, targets=targets)
    assert distiller.non_finite_targets == len(bad)
    assert metrics["students"]["s0"]["skipped_updates"] == 0  # no minibatch is thrown away
    assert all(th.isfinite(p).all() for p in distiller.students["s0"].parameters())


def test_a_learning_rate_schedule_is_checked_at_every_value():
    with pytest.raises(ValueError, match="learning_rate schedule gave nan"):
        DistillConfig(learning_rate=lambda progress: float("nan"))
    teacher = synthetic_teacher()
    distiller = distiller_for(teacher, learning_rate=lambda progress: 1e-3 if progress > 0.5 else -1e-3)
    weights = [p.detach().clone() for p in distiller.students["s0"].parameters()]
    with pytest.raises(ValueError, match=r"learning_rate schedule gave -0\.001 at progress_remaining=0\.25"):
        distiller.update(observations(), progress_remaining=0.25)
    assert all(th.equal(a, b) for a, b in zip(weights, distiller.students["s0"].parameters(), strict=True))


def test_a_gaussian_teacher_keeps_its_log_std_when_a_large_batch_is_chunked():
    teacher = Teacher(PPO("MlpPolicy", "Pendulum-v1", seed=0))
    obs = th.as_tensor(np.random.default_rng(0).uniform(-1, 1, (TARGET_CHUNK_SIZE + 100, 3)).astype(np.float32))
    chunked = teacher.targets(obs)
    with th.no_grad():
        whole = policy_outputs(teacher.policy, obs)
    assert chunked.log_std is not None
    assert chunked.log_std.shape == (len(obs), 1)
    for part, expected in zip(chunked, whole, strict=True):
        th.testing.assert_close(part, expected)


def test_a_new_teacher_of_another_kind_is_refused_and_compression_follows_the_teacher():
    distiller = distiller_for(synthetic_teacher())
    with pytest.raises(ValueError, match="q_values"):
        distiller.set_teacher(Teacher(DQN("MlpPolicy", "CartPole-v1", seed=0)))
    larger = PPO("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs={"net_arch": [256, 256]})
    distiller.set_teacher(Teacher(larger))
    student_parameters = count_acting_parameters(distiller.students["s0"])
    assert distiller.compression["s0"] == student_parameters / count_acting_parameters(larger.policy)


def test_qrdqn_students_take_their_teachers_quantiles():
    teacher = QRDQN("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs={"n_quantiles": 10})
    student = distill(teacher, "MlpPolicy", "CartPole-v1", 256, student_kwargs={"net_arch": [8]}, seed=0)
    assert student.n_quantiles == 10
    told = distill(teacher, "MlpPolicy", "CartPole-v1", 256, student_kwargs={"n_quantiles": 5}, seed=0)
    assert told.n_quantiles == 5
    rungs = ladder(teacher, ratios=(0.05,))
    alias, kwargs = rungs["5pct"]
    assert kwargs["n_quantiles"] == 10
    built = make_student(
        alias, teacher.observation_space, teacher.action_space, teacher.policy_aliases, student_kwargs=kwargs, seed=0
    )
    assert rungs.parameters["5pct"] == count_acting_parameters(built)


@pytest.mark.parametrize("algo", [DQN, QRDQN])
def test_a_q_value_teacher_gives_its_greedy_q_value_as_the_state_value(algo):
    view = Teacher(synthetic_teacher(algo))
    targets = view.targets(observations())
    assert view.has_values
    assert targets.values is not None
    assert th.equal(targets.values, targets.scores.max(dim=1).values)


def student_values(student, obs: th.Tensor) -> th.Tensor:
    with th.no_grad():
        return student.predict_values(obs).flatten()


def test_a_value_head_starts_at_the_teachers_level_once(tmp_path):
    teacher = synthetic_teacher(DQN)
    with th.no_grad():  # Q-values near 100, as CartPole's are: far from where a fresh value head starts
        teacher.q_net.q_net[-1].bias.add_(100.0)
    actor_critic = "stable_baselines3.common.policies.ActorCriticPolicy"
    assert distiller_for(teacher, student=actor_critic).distill_value == {"s0": False}  # max_a Q on request only
    distiller = distiller_for(teacher, n_students=2, student=actor_critic, distill_value=True)
    assert distiller.distill_value == {"s0": True, "s1": True}
    obs = observations()
    level = distiller.teacher.targets(obs).values.mean()
    assert all(abs(student_values(s, obs).mean() - level) > 90 for s in distiller.students.values())
    distiller.update(obs)  # the first update calibrates, then regresses
    for student in distiller.students.values():
        assert abs(student_values(student, obs).mean() - level) < 1.0
    # Once: later batches leave the level to the regression.
    before = student_values(distiller.students["s0"], obs)
    distiller.calibrate_values(obs, th.full((len(obs),), 500.0))
    assert th.equal(student_values(distiller.students["s0"], obs), before)
    # A student re-initialised after collapsing is calibrated again; a checkpoint remembers which are.
    distiller.reset_student("s1")
    state = distiller.state_dict()
    distiller.calibrate_values(obs, th.full((len(obs),), 500.0))
    assert student_values(distiller.students["s1"], obs).mean() == pytest.approx(500.0, abs=1e-3)
    assert th.equal(student_values(distiller.students["s0"], obs), before)
    resumed = distiller_for(teacher, n_students=2, student=actor_critic, distill_value=True)
    resumed.load_state_dict(state)
    assert resumed.values_calibrated == {"s0"}
    # A checkpoint from before calibration existed: its students have learned, their value heads are left be.
    del state["values_calibrated"]
    resumed.load_state_dict(state)
    assert resumed.values_calibrated == {"s0", "s1"}
