"""Building and checking students (their files: :mod:`sb3_distill.student_files`).

A student is always a plain SB3 ``BasePolicy``: ``predict``, ``evaluate_policy`` and ``save`` work as on
any SB3 policy. An alias such as ``"MlpPolicy"`` or a policy class is built for the teacher's spaces; a
ready policy instance is used as it is (the user's own object, its class untouched); a plain
``torch.nn.Module`` is wrapped in :class:`ModuleStudent`. What the package adds to a student (the
``VecNormalize`` statistics its inputs were normalised with) is a record beside it, written to its file by
:func:`~sb3_distill.student_files.save_student`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.utils import get_device
from torch import nn

from sb3_distill.architectures import MinAtarCNN, SmallCNN
from sb3_distill.ladder import (
    StudentLadder,
    atari_cnn_student,
    ladder,
    minatar_cnn_student,
    minatar_pooled_student,
    mlp_student,
    student_family,
)
from sb3_distill.outputs import inherited_student_kwargs, is_supported_policy, wants_critic_extractor
from sb3_distill.spaces import space_mismatch
from sb3_distill.teachers import SUPPORTED_ALGORITHMS

__all__ = [
    "MinAtarCNN",
    "ModuleStudent",
    "SmallCNN",
    "StudentLadder",
    "atari_cnn_student",
    "import_name",
    "ladder",
    "make_student",
    "minatar_cnn_student",
    "minatar_pooled_student",
    "mlp_student",
    "resolve_student_kwargs",
    "student_family",
]

#: The name of the student when a single one is given.
SINGLE_STUDENT = "student"

#: Adam's epsilon for students built from an alias or class without ``optimizer_kwargs``. SB3's actor-critic
#: policies use 1e-5 (PPO's setting); distillation's KL gradients are small enough that 1e-5 damps its steps:
#: on PPO CartPole, teacher-driven ``[8]`` students of ``distill`` returned more at 1e-8 in 39 of 40 paired
#: seeds (``benchmarks/bc_ablation.py``).
STUDENT_ADAM_EPS = 1e-8

#: What the ``student`` argument accepts.
StudentSpec = str | type[BasePolicy] | BasePolicy | nn.Module

#: Prefixes of the short names that ``student_kwargs`` may use, as RL-Zoo's YAML files do (``nn.ReLU``).
_NAME_PREFIXES = {"nn": "torch.nn", "th": "torch"}


def import_name(name: str, what: str = "name") -> Any:
    """
    Import an object by its dotted name (``package.module.Name`` or ``package.module:Qual.Name``).

    Lets YAML files and command lines refer to classes: ``sb3_distill.students.SmallCNN``,
    ``torch.nn.ReLU`` (or RL-Zoo's short form ``nn.ReLU``).

    :param name: the dotted name
    :param what: what the name is for, for the error message
    :return: the object
    """
    head, _, _ = name.partition(".")
    path = _NAME_PREFIXES[head] + name[len(head) :] if head in _NAME_PREFIXES else name
    module_name, sep, qualname = path.partition(":")
    if not sep:
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise ImportError(f"{what} {name!r} is not a dotted name such as 'package.module.Name'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise ImportError(f"{what} {name!r} does not import: {error}") from error
    return obj


def resolve_student_kwargs(student_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    ``policy_kwargs`` for a student, with class names given as strings imported.

    Keys ending in ``_class`` and ``activation_fn`` may hold dotted names (as YAML files must);
    everything else is passed unchanged.

    :param student_kwargs: the user's ``student_kwargs``
    :return: a new dict
    """
    kwargs = dict(student_kwargs or {})
    for key, value in kwargs.items():
        if isinstance(value, str) and (key.endswith("_class") or key == "activation_fn"):
            kwargs[key] = import_name(value, f"student_kwargs[{key!r}]")
    return kwargs


class ModuleStudent(BasePolicy):
    """
    An SB3 policy around a plain ``torch.nn.Module`` that maps preprocessed observations to one score per action.

    The module receives observations after SB3's ``preprocess_obs`` (float, images scaled to [0, 1],
    still channel-first); its outputs are treated as logits: ``predict(..., deterministic=True)``
    takes the highest-scoring action, ``deterministic=False`` samples from their softmax.

    :param observation_space: the teacher's observation space
    :param action_space: the teacher's (discrete) action space
    :param module: the network
    :param lr_schedule: learning-rate schedule for the optimiser (``None``: 0 until a distiller sets it)
    :param normalize_images: scale uint8 images to [0, 1] before the module
    :param optimizer_class: optimiser class
    :param optimizer_kwargs: extra optimiser arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        module: nn.Module,
        lr_schedule: Schedule | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.module = module
        learning_rate = lr_schedule(1) if lr_schedule is not None else 0.0  # the distiller sets it per update
        self.optimizer = self.optimizer_class(self.module.parameters(), lr=learning_rate, **self.optimizer_kwargs)  # type: ignore[call-arg]

    def action_scores(self, obs: th.Tensor) -> th.Tensor:
        """
        :param obs: raw observation batch
        :return: scores of shape ``(batch, n_actions)``
        """
        return self.module(preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images))

    def forward(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        assert isinstance(observation, th.Tensor)
        scores = self.action_scores(observation)
        if deterministic:
            return scores.argmax(dim=-1)
        return th.distributions.Categorical(logits=scores).sample()

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(module=self.module, optimizer_class=self.optimizer_class, optimizer_kwargs=self.optimizer_kwargs)
        return data


def _describe(space: spaces.Space) -> str:
    if isinstance(space, spaces.Box):
        return f"Box(shape={space.shape}, dtype={space.dtype})"
    return repr(space)


def check_student(student: BasePolicy, observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """
    Check that a student can be distilled from a teacher with these spaces.

    :param student: the student policy
    :param observation_space: the teacher's observation space (as its policy sees it)
    :param action_space: the teacher's action space
    """
    if not is_supported_policy(student):
        raise TypeError(
            f"student policy {type(student).__name__} is not supported: expected an ActorCriticPolicy "
            f"(PPO/A2C family), a DQNPolicy (DQN family) or a torch.nn.Module"
        )
    difference = space_mismatch(observation_space, student.observation_space)
    if difference is not None:
        hint = ""
        obs_space = observation_space
        if (
            isinstance(student.observation_space, spaces.Box)
            and isinstance(obs_space, spaces.Box)
            and sorted(student.observation_space.shape) == sorted(obs_space.shape)
        ):
            hint = " (SB3 transposes image observations to channel-first: build the student from the teacher's spaces)"
        raise ValueError(
            f"student observation space {_describe(student.observation_space)} does not match the teacher's "
            f"{_describe(observation_space)}: {difference}{hint}"
        )
    difference = space_mismatch(action_space, student.action_space)
    if difference is not None:
        raise ValueError(
            f"student action space {student.action_space} does not match the teacher's {action_space}: {difference}"
        )
    if isinstance(student, ModuleStudent):
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"a torch.nn.Module student needs a Discrete action space, not {action_space}")
        assert isinstance(observation_space, spaces.Box)
        obs = th.as_tensor(np.zeros((2, *observation_space.shape), dtype=observation_space.dtype))
        device = th.device(student.device)
        cuda = [device.index if device.index is not None else th.cuda.current_device()] if device.type == "cuda" else []
        try:  # a module that draws random numbers (dropout) must not move the generators the teacher samples from
            with th.no_grad(), th.random.fork_rng(devices=cuda):
                scores = student.action_scores(obs.to(device))
        except Exception as error:
            raise ValueError(
                f"the student module failed on a batch of observations of shape {tuple(obs.shape)}: {error}"
            ) from error
        expected = (2, int(action_space.n))
        if tuple(scores.shape) != expected:
            raise ValueError(
                f"the student module outputs shape {tuple(scores.shape)} for a batch of 2 observations; "
                f"expected {expected}: one score per action"
            )


def make_student(
    student: StudentSpec,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    policy_aliases: Mapping[str, type[BasePolicy]],
    student_kwargs: dict[str, Any] | None = None,
    learning_rate: float = 1e-3,
    seed: int | None = None,
    device: th.device | str = "cpu",
    teacher_policy: BasePolicy | None = None,
    distill_value: bool | None = None,
) -> BasePolicy:
    """
    Build a student for a teacher's spaces.

    Weights are initialised inside ``torch.random.fork_rng`` from ``seed``, so building a student
    never moves the global torch generator that the teacher draws from.

    :param student: an alias of ``policy_aliases`` (``"MlpPolicy"``, ``"CnnPolicy"``), an SB3 policy
        class (or its dotted name, ``"sb3_contrib.qrdqn.policies.CnnPolicy"``), a policy instance built
        for these spaces, or a ``torch.nn.Module``
    :param observation_space: the teacher's observation space
    :param action_space: the teacher's action space
    :param policy_aliases: the teacher's policy aliases (``PPO.policy_aliases``, say)
    :param student_kwargs: ``policy_kwargs`` for an alias or a class (``net_arch``, ``features_extractor_class``...);
        classes may be given by dotted name (see :func:`resolve_student_kwargs`). Without ``optimizer_kwargs``,
        an Adam optimiser gets ``eps=1e-8`` (:data:`STUDENT_ADAM_EPS`), not SB3's actor-critic 1e-5
    :param learning_rate: initial learning rate of the student's optimiser
    :param seed: seed of the weight initialisation (``None``: fresh entropy)
    :param device: where the student lives
    :param teacher_policy: the teacher's policy, whose settings a student of its family inherits
        unless ``student_kwargs`` says otherwise (a QR-DQN student's ``n_quantiles``)
    :param distill_value: the distillation's ``distill_value``: unless ``False``, a Q-value teacher's actor-critic
        student whose actor and critic would share a CNN gets a critic CNN of its own unless ``student_kwargs``
        sets ``share_features_extractor`` (:func:`~sb3_distill.outputs.wants_critic_extractor`)
    :return: the student, checked against the spaces
    """
    kwargs = resolve_student_kwargs(student_kwargs)
    if isinstance(student, str):
        if student in policy_aliases:
            student = policy_aliases[student]
        elif "." in student or ":" in student:
            student = import_name(student, "student")
        else:
            raise ValueError(
                f"unknown student policy alias {student!r}: expected one of {sorted(policy_aliases)} "
                f"or the dotted name of a policy class"
            )
    if not isinstance(student, type) and kwargs:
        raise ValueError(
            f"student_kwargs {sorted(kwargs)} only apply when student is an alias or a policy class, "
            f"not a ready {type(student).__name__} instance"
        )
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    policy: BasePolicy
    if isinstance(student, type):
        if not issubclass(student, BasePolicy):
            raise TypeError(f"student class {student.__name__} is not an SB3 BasePolicy subclass")
        kwargs = {**inherited_student_kwargs(teacher_policy, student), **kwargs}
        policy = _build_policy(student, observation_space, action_space, kwargs, learning_rate, seed)
        if (
            distill_value is not False
            and "share_features_extractor" not in kwargs
            and wants_critic_extractor(teacher_policy, policy)
        ):
            kwargs["share_features_extractor"] = False
            policy = _build_policy(student, observation_space, action_space, kwargs, learning_rate, seed)
    elif isinstance(student, BasePolicy):
        policy = student  # the user's own object, used as it is
    elif isinstance(student, nn.Module):
        policy = ModuleStudent(observation_space, action_space, student, lr_schedule=lambda _: learning_rate)
    else:
        raise TypeError(
            f"student must be a policy alias, an SB3 policy class or instance, or a torch.nn.Module; "
            f"got {type(student).__name__}"
        )
    policy = policy.to(get_device(device))
    check_student(policy, observation_space, action_space)
    return policy


def _build_policy(
    policy_class: type[BasePolicy],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    kwargs: dict[str, Any],
    learning_rate: float,
    seed: int,
) -> BasePolicy:
    """A policy of this class with weights initialised from ``seed`` (the global torch generator untouched)."""
    with th.random.fork_rng(devices=[]):  # students are built on the CPU, then moved
        th.random.default_generator.manual_seed(seed)  # not torch.manual_seed: it would reseed every CUDA device
        try:
            policy = policy_class(observation_space, action_space, lr_schedule=lambda _: learning_rate, **kwargs)
        except TypeError as error:
            raise TypeError(
                f"cannot build student {policy_class.__name__} with student_kwargs {kwargs}: {error}"
            ) from error
    if "optimizer_kwargs" not in kwargs:
        _set_adam_eps(policy, STUDENT_ADAM_EPS)
    return policy


def _set_adam_eps(policy: BasePolicy, eps: float) -> None:
    """Give the Adam optimisers of a freshly built policy this epsilon (its ``policy_kwargs`` stay as they are)."""
    for optimizer in (getattr(policy, "optimizer", None), getattr(getattr(policy, "actor", None), "optimizer", None)):
        if isinstance(optimizer, th.optim.Adam | th.optim.AdamW):
            for group in optimizer.param_groups:
                group["eps"] = eps


def algorithm_class(algo: str | type[BaseAlgorithm]) -> type[BaseAlgorithm]:
    """
    :param algo: an algorithm as RL-Zoo names it (``"ppo"``, ``"dqn"``, ``"qrdqn"`` ...) or its class
    :return: the class
    """
    if isinstance(algo, type) and issubclass(algo, BaseAlgorithm):
        return algo
    by_name = {cls.__name__.lower(): cls for cls in SUPPORTED_ALGORITHMS}
    if not isinstance(algo, str) or algo.lower() not in by_name:
        raise ValueError(f"unknown student_algo {algo!r}: expected one of {sorted(by_name)} or an SB3 algorithm class")
    return by_name[algo.lower()]


def _with_algorithm_aliases(spec: StudentSpec, student_algo: str | type[BaseAlgorithm] | None) -> StudentSpec:
    """An alias spec (``"MlpPolicy"``) as the policy class of ``student_algo``; other specs unchanged."""
    if student_algo is None or not isinstance(spec, str) or "." in spec or ":" in spec:
        return spec
    algorithm = algorithm_class(student_algo)
    if spec not in algorithm.policy_aliases:
        raise ValueError(
            f"unknown student policy alias {spec!r} for {algorithm.__name__}: expected one of "
            f"{sorted(algorithm.policy_aliases)}"
        )
    return algorithm.policy_aliases[spec]


def student_specs(
    student: StudentSpec | Mapping[str, Any],
    student_kwargs: dict[str, Any] | None,
    student_algo: str | type[BaseAlgorithm] | None = None,
) -> dict[str, tuple[StudentSpec, dict[str, Any] | None]]:
    """
    The students a ``student`` argument names: ``{name: (spec, student_kwargs)}``.

    :param student: one student spec, or a dict name -> spec or ``(spec, policy_kwargs)``
    :param student_kwargs: ``policy_kwargs`` of a single student
    :param student_algo: the algorithm whose policy aliases name the students (``"ppo"``: ``"MlpPolicy"`` is
        PPO's actor-critic, ready for :func:`~sb3_distill.to_ppo`, whatever the teacher); ``None``: the teacher's
    :return: the specs by name (a single student is named ``"student"``)
    """
    if student_algo is not None:
        algorithm_class(student_algo)  # checked even when every student is a class
    if not isinstance(student, Mapping):
        return {SINGLE_STUDENT: (_with_algorithm_aliases(student, student_algo), student_kwargs)}
    if student_kwargs:
        raise ValueError(
            "student_kwargs applies to a single student; give each student of the dict its own (spec, kwargs)"
        )
    if not student:
        raise ValueError("student dict is empty: give at least one name -> student spec")
    specs = {}
    for name, spec in student.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"student names must be non-empty strings without '/', got {name!r}")
        if isinstance(spec, tuple):
            if len(spec) != 2 or not isinstance(spec[1], dict | type(None)):
                raise ValueError(f"student {name!r}: a tuple spec must be (alias or policy class, policy_kwargs)")
            specs[name] = (_with_algorithm_aliases(spec[0], student_algo), spec[1])
        else:
            specs[name] = (_with_algorithm_aliases(spec, student_algo), None)
    return specs


def make_students(
    specs: Mapping[str, tuple[StudentSpec, dict[str, Any] | None]],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    policy_aliases: Mapping[str, type[BasePolicy]],
    learning_rate: float = 1e-3,
    seed: int | None = None,
    device: th.device | str = "cpu",
    teacher_policy: BasePolicy | None = None,
    distill_value: bool | None = None,
) -> dict[str, BasePolicy]:
    """
    Build every student of :func:`student_specs` for a teacher's spaces, each from its own seed.

    :param specs: name -> (spec, student_kwargs)
    :param observation_space: the teacher's observation space
    :param action_space: the teacher's action space
    :param policy_aliases: the teacher's policy aliases
    :param learning_rate: initial learning rate of the students' optimisers
    :param seed: seed of the initialisation (``None``: fresh entropy)
    :param device: where the students live
    :param teacher_policy: the teacher's policy (see :func:`make_student`)
    :param distill_value: the distillation's ``distill_value`` (see :func:`make_student`)
    :return: the students, by name
    """
    seeds = np.random.SeedSequence(seed).generate_state(len(specs))
    return {
        name: make_student(
            spec,
            observation_space,
            action_space,
            policy_aliases,
            student_kwargs=kwargs,
            learning_rate=learning_rate,
            seed=int(student_seed),
            device=device,
            teacher_policy=teacher_policy,
            distill_value=distill_value,
        )
        for (name, (spec, kwargs)), student_seed in zip(specs.items(), seeds, strict=True)
    }
