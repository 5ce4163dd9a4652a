"""Students run as one network: the same update as one by one, and a clear line between what packs and what does not."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from sb3_distill import ladder
from sb3_distill.architectures import MinAtarCNN
from sb3_distill.distiller import DistillConfig, Distiller
from sb3_distill.outputs import policy_outputs
from sb3_distill.packing import PackedStudents
from sb3_distill.students import make_student
from sb3_distill.teachers import Teacher
from tests.test_distiller import observations, synthetic_teacher


def students_for(teacher, specs: dict) -> dict:
    view = Teacher(teacher)
    return {
        name: make_student(alias, view.observation_space, view.action_space, teacher.policy_aliases, kwargs, seed=i)
        for i, (name, (alias, kwargs)) in enumerate(specs.items())
    }


def packed_and_each(teacher, specs: dict, **config) -> tuple[Distiller, Distiller]:
    students = students_for(teacher, specs)
    packed = Distiller(Teacher(teacher), students, DistillConfig(**config), seed=0)
    each = Distiller(Teacher(teacher), copy.deepcopy(students), DistillConfig(**config), seed=0)
    each.packed = None
    return packed, each


def assert_learn_alike(packed: Distiller, each: Distiller, obs: th.Tensor, updates: int) -> None:
    """Packed and one-by-one students end with the same weights and metrics, and every student learned."""
    initial = copy.deepcopy(each.students)
    for _ in range(updates):
        packed_metrics, each_metrics = packed.update(obs), each.update(obs)
    for name in each.students:
        for p_packed, p_each in zip(packed.students[name].parameters(), each.students[name].parameters(), strict=True):
            assert th.allclose(p_packed, p_each, atol=1e-5), name
        for key, value in each_metrics["students"][name].items():
            assert packed_metrics["students"][name][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, key)
        trained, before = (getattr(s[name], "q_net", s[name]) for s in (packed.students, initial))  # not DQN's target
        assert all(not th.equal(a, b) for a, b in zip(trained.parameters(), before.parameters(), strict=True)), name


@pytest.mark.parametrize(
    ("algo", "loss"), [(PPO, "kl"), (PPO, "mse"), (PPO, "nll"), (DQN, "kl"), (DQN, "mse")], ids=str
)
def test_packed_students_learn_exactly_as_one_by_one(algo, loss):
    teacher = synthetic_teacher(algo)
    specs = {
        "small": ("MlpPolicy", {"net_arch": [4]}),
        "deep": ("MlpPolicy", {"net_arch": [8, 8]}),
        "wide": ("MlpPolicy", {"net_arch": [32]}),
    }
    packed, each = packed_and_each(teacher, specs, loss=loss, epochs=3, batch_size=64)
    assert packed.packed is not None
    assert_learn_alike(packed, each, observations(), updates=5)


def minatar_observations(n: int, seed: int = 0) -> th.Tensor:
    """Binary 10x10x4 frames, as MinAtar Breakout gives them."""
    return th.as_tensor(np.random.default_rng(seed).random((n, 10, 10, 4)) < 0.2, dtype=th.float32)


def cnn(channels: int, **kwargs) -> tuple[str, dict]:
    extractor = {"channels": channels, "features_dim": 2 * channels}
    return "MlpPolicy", {"features_extractor_class": MinAtarCNN, "features_extractor_kwargs": extractor, **kwargs}


@pytest.mark.parametrize("algo", [PPO, DQN], ids=str)
def test_minatar_cnn_students_pack_and_learn_exactly_as_one_by_one(algo):
    """Their convolutions run as one product over patches; a separate value extractor and an MLP pack beside them."""
    teacher = synthetic_teacher(algo, "MinAtar/Breakout-v1")
    specs = {"narrow": cnn(3), "wide": cnn(12, net_arch=[8]), "mlp": ("MlpPolicy", {"net_arch": [8]})}
    if algo is PPO:
        specs["own_value"] = cnn(5, share_features_extractor=False)
    packed, each = packed_and_each(teacher, specs, epochs=2, batch_size=64)
    assert packed.packed is not None
    obs = minatar_observations(384)
    scores, values = packed.packed(obs[:16])
    for index, (name, student) in enumerate(packed.students.items()):  # the outputs first: the students' own
        if algo is DQN:
            own = student.q_net(obs[:16])
        else:
            features = BasePolicy.extract_features(student, obs[:16], student.pi_features_extractor)
            own = student.action_net(student.mlp_extractor.forward_actor(features))
        assert th.allclose(scores[:, index], own, atol=1e-5), name
    if algo is PPO:
        own_values = th.cat([student.predict_values(obs[:16]) for student in packed.students.values()], dim=1)
        assert th.allclose(values, own_values, atol=1e-5)
    assert_learn_alike(packed, each, obs, updates=3)


def test_channels_first_minatar_cnn_students_pack_with_their_own_outputs():
    """``MinAtarCNN(channels_last=False)`` on (channels, height, width) frames: the patches follow the layout."""
    space = spaces.Box(0.0, 1.0, (4, 10, 10), dtype=np.float32)
    students = {
        name: make_student(
            "MlpPolicy",
            space,
            spaces.Discrete(3),
            PPO.policy_aliases,
            {**cnn(channels)[1], "features_extractor_kwargs": {"channels": channels, "channels_last": False}},
            seed=channels,
        )
        for name, channels in (("a", 3), ("b", 7))
    }
    packed = PackedStudents.build(students, dict.fromkeys(students, True))
    assert packed is not None
    obs = minatar_observations(16).permute(0, 3, 1, 2).contiguous()
    scores, values = packed(obs)
    for index, student in enumerate(students.values()):
        features = student.extract_features(obs)
        logits = student.action_net(student.mlp_extractor.forward_actor(features))
        assert th.allclose(scores[:, index], logits, atol=1e-5)
        assert th.allclose(values[:, index], student.predict_values(obs).flatten(), atol=1e-5)


def test_students_without_value_distillation_and_with_it_pack_together():
    teacher = synthetic_teacher(PPO)
    students = students_for(teacher, {"a": ("MlpPolicy", {"net_arch": [4]}), "b": ("MlpPolicy", {"net_arch": [6]})})
    packed = PackedStudents.build(students, {"a": True, "b": False})
    assert packed is not None
    assert packed.value_names == ["a"]
    obs = observations(32)
    scores, values = packed(obs)
    assert scores.shape == (32, 2, 2)
    assert values.shape == (32, 1)
    for index, student in enumerate(students.values()):
        logits = student.action_net(student.mlp_extractor.forward_actor(student.extract_features(obs)))
        assert th.allclose(scores[:, index], logits, atol=1e-6)
    a = students["a"]
    assert th.allclose(values[:, 0], a.predict_values(obs).flatten(), atol=1e-6)


def test_what_does_not_pack_runs_one_by_one():
    teacher = synthetic_teacher(PPO)
    mlp = {"s": ("MlpPolicy", {"net_arch": [8]}), "t": ("MlpPolicy", {"net_arch": [4]})}
    assert PackedStudents.build(students_for(teacher, mlp), dict.fromkeys(mlp, True)) is not None
    one = {"s": mlp["s"]}  # a single student gains nothing from packing
    assert PackedStudents.build(students_for(teacher, one), {"s": True}) is None
    softmax = {**mlp, "u": ("MlpPolicy", {"net_arch": [8], "activation_fn": nn.Softmax})}  # not element-wise
    assert PackedStudents.build(students_for(teacher, softmax), dict.fromkeys(softmax, True)) is None
    minatar = synthetic_teacher(PPO, "MinAtar/Breakout-v1")
    cnn = {name: ("MlpPolicy", {"features_extractor_class": MinAtarCNN, "net_arch": []}) for name in "st"}
    assert PackedStudents.build(students_for(minatar, cnn), dict.fromkeys(cnn, True)) is not None
    pooled = {**cnn, "u": ("MlpPolicy", {**cnn["s"][1], "features_extractor_kwargs": {"pool": 2}})}
    assert PackedStudents.build(students_for(minatar, pooled), dict.fromkeys(pooled, True)) is None
    continuous = synthetic_teacher(PPO, "Pendulum-v1")
    distiller = Distiller(Teacher(continuous), students_for(continuous, mlp), DistillConfig(), seed=0)
    assert distiller.packed is None
    ladder_students = students_for(teacher, dict(ladder(teacher)))
    assert PackedStudents.build(ladder_students, dict.fromkeys(ladder_students, True)) is not None


def test_a_student_with_a_non_finite_loss_is_skipped_and_the_others_learn_as_alone():
    teacher = synthetic_teacher(PPO)
    specs = {"broken": ("MlpPolicy", {"net_arch": [4]}), "fine": ("MlpPolicy", {"net_arch": [8]})}
    packed, each = packed_and_each(teacher, specs, epochs=2, batch_size=64)
    for distiller in (packed, each):
        with th.no_grad():
            distiller.students["broken"].action_net.weight.fill_(float("nan"))
    obs = observations(256, seed=3)
    with pytest.warns(RuntimeWarning, match="non-finite distillation loss for student 'broken'"):
        packed.update(obs)
    with pytest.warns(RuntimeWarning):
        each.update(obs)
    assert packed.skipped_updates == each.skipped_updates == {"broken": 8, "fine": 0}
    for p_packed, p_each in zip(packed.students["fine"].parameters(), each.students["fine"].parameters(), strict=True):
        assert th.allclose(p_packed, p_each, atol=1e-6)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "one_by_one"])
def test_the_value_loss_leaves_the_features_the_actor_shares(packed):
    """A critic on the actor's CNN learns from its features as they are: its loss moves only the critic's layers."""
    teacher = synthetic_teacher(PPO, "MinAtar/Breakout-v1")
    specs = {"a": cnn(3), "b": cnn(5, net_arch=[8]), "own": cnn(4, share_features_extractor=False)}
    students = students_for(teacher, specs)
    obs = minatar_observations(64)
    if packed:
        packing = PackedStudents.build(students, dict.fromkeys(students, True))
        assert packing is not None
        values = packing(obs)[1]
    else:
        values = th.stack(
            [policy_outputs(s, obs, detach_shared_features=True).values for s in students.values()], dim=1
        )
    values.sum().backward()
    for name, student in students.items():
        extractor = student.vf_features_extractor
        moved = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in extractor.parameters())
        assert moved == (name == "own"), name
        assert student.value_net.weight.grad.abs().sum() > 0, name
