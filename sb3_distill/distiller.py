"""The shared distillation step: teacher targets once per batch, every student updated, metrics returned.

The real-time callback, offline distillation and simulator-free distillation all call
:meth:`Distiller.update` with a batch of observations; only where the observations come from differs.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import cloudpickle
import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import update_learning_rate
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from sb3_distill.losses import DEFAULT_TEMPERATURE, gaussian_kl_loss, get_loss, loss_for_kind, value_loss
from sb3_distill.normalization import record_obs_normalization
from sb3_distill.outputs import (
    CONTINUOUS_KINDS,
    GAUSSIAN,
    SQUASHED_GAUSSIAN,
    PolicyOutputs,
    count_acting_parameters,
    has_critic_extractor,
    has_value_head,
    policy_outputs,
    scaled_actions,
    score_kind,
)
from sb3_distill.packing import PackedStudents
from sb3_distill.sources import TargetMemory
from sb3_distill.spaces import spaces_mismatch
from sb3_distill.students import SINGLE_STUDENT, StudentSpec, make_students
from sb3_distill.teachers import TARGET_CHUNK_SIZE, Teacher, eval_mode

#: Updates in a row with the same outputs for every observation (the teacher's varying) after which a student is
#: called collapsed.
COLLAPSE_UPDATES = 10
#: The largest ``output_spread`` of a student called constant: a dead layer gives every observation the outputs
#: of the biases after it (a spread of 0 up to rounding), a live student spreads its outputs far wider.
CONSTANT_SPREAD = 1e-4


def check_positive(name: str, value: Any, integer: bool = False, allow_zero: bool = False) -> None:
    """
    Raise a ``TypeError``/``ValueError`` naming ``name`` unless ``value`` is a finite positive number.

    :param name: the option's name, for the message
    :param value: its value
    :param integer: require an integer
    :param allow_zero: accept 0
    """
    kind = "an integer" if integer else "a number"
    valid_type = isinstance(value, int | np.integer) if integer else isinstance(value, int | float | np.number)
    if isinstance(value, bool) or not valid_type:
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


@dataclass
class DistillConfig:
    """
    Options of the distillation step, checked on construction.

    :param loss: ``"kl"`` (KL(teacher || student): softmax distributions, or Gaussians for continuous
        actor-critics), ``"mse"`` (on logits, Q-values, Gaussian means or SAC/TD3 actions) or ``"nll"``
        (cross-entropy with the teacher's greedy action); ``None``: ``"kl"``, and ``"mse"`` for SAC/TD3 teachers
    :param temperature: softens the teacher's scores in the KL loss; ``None`` picks 0.01 for
        Q-value teachers (Rusu et al., 2015) and 1.0 for actor-critic teachers
    :param learning_rate: the students' learning rate, a float or an SB3 schedule of the teacher's
        remaining progress (1 to 0)
    :param batch_size: minibatch size of the student updates
    :param epochs: passes over each batch of observations
    :param distill_value: also regress the teacher's state values with the student's value head: an
        actor-critic teacher's value head or a Q-value teacher's ``max_a Q(s, a)`` (an actor-critic student
        then starts fine-tuning with a critic); ``None``: when teacher and student are actor-critics, and for a
        Q-value teacher when the student's critic has a CNN of its own, as a Q-value teacher's actor-critic CNN
        student gets by default (:func:`~sb3_distill.outputs.wants_critic_extractor`: then 15 of 15 seeds at
        parity after ``to_ppo`` on three MinAtar Breakout teachers). An MLP student of a Q-value teacher learns
        ``max_a Q`` on request only: on CartPole fine-tuning from it reached parity no more often (README).
        The head's level starts at the teacher's mean value (:meth:`Distiller.calibrate_values`), and a critic
        that shares the actor's features extractor (a CNN) learns from the features as they are: the value loss
        moves only the critic's own layers, never the features the actor acts on
    :param vf_coef: weight of the value loss
    :param max_grad_norm: clip the students' gradient norm (``None``: no clipping)
    """

    loss: str | None = None
    temperature: float | None = None
    learning_rate: float | Schedule = 1e-3
    batch_size: int = 128
    epochs: int = 4
    distill_value: bool | None = None
    vf_coef: float = 0.5
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if self.loss is not None:
            get_loss(self.loss)
        if self.temperature is not None:
            check_positive("temperature", self.temperature)
        if not callable(self.learning_rate):
            check_positive("learning_rate", self.learning_rate)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("epochs", self.epochs, integer=True)
        check_positive("vf_coef", self.vf_coef, allow_zero=True)
        if self.max_grad_norm is not None:
            check_positive("max_grad_norm", self.max_grad_norm)
        if self.distill_value not in (None, True, False):
            raise TypeError(f"distill_value must be True, False or None, got {self.distill_value!r}")
        self.learning_rate_at(1.0)  # a schedule's first value, checked before anything trains

    def learning_rate_at(self, progress_remaining: float) -> float:
        """
        :param progress_remaining: the teacher's remaining progress, from 1 (start) to 0 (end)
        :return: the students' learning rate at that point, checked (a schedule may not give NaN or < 0)
        """
        try:
            # Float or schedule, as SB3 reads learning rates (its get_schedule_fn is deprecated since 2.7 for
            # FloatSchedule, which SB3 2.6, the lowest version supported, lacks).
            schedule = self.learning_rate
            value = float(schedule(progress_remaining) if callable(schedule) else schedule)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"learning_rate schedule failed at progress_remaining={progress_remaining}: {error} (expected a number)"
            ) from error
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"learning_rate schedule gave {value!r} at progress_remaining={progress_remaining}: "
                f"expected a finite number >= 0"
            )
        return value

    def to_dict(self) -> dict[str, Any]:
        """:return: a picklable dict (a learning-rate schedule is stored with cloudpickle)."""
        data = asdict(self)
        if callable(self.learning_rate):
            data["learning_rate"] = cloudpickle.dumps(self.learning_rate)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistillConfig:
        """:return: the config :meth:`to_dict` saved."""
        values = dict(data)
        if isinstance(values.get("learning_rate"), bytes):
            values["learning_rate"] = cloudpickle.loads(values["learning_rate"])
        return cls(**values)


class _Batch(NamedTuple):
    """A minibatch of observations with the teacher's targets for it."""

    obs: th.Tensor
    scores: th.Tensor
    values: th.Tensor | None
    log_std: th.Tensor | None
    actions: th.Tensor


@dataclass
class _Sums:
    """Running sums of every student's metrics over one update, one entry per student (no device sync per step)."""

    loss: th.Tensor
    value_loss: th.Tensor
    agree: th.Tensor
    updates: list[int]
    seen: list[int]
    #: discrete actions: how often each student's greedy action was each action, ``(students, actions)``
    chosen: th.Tensor
    #: the largest spread of each student's outputs over one minibatch's observations (max - min, any output)
    spread: th.Tensor

    @classmethod
    def zeros(cls, n_students: int, device: th.device, n_actions: int = 0) -> _Sums:
        loss, value_loss, agree, spread = (th.zeros(n_students, device=device) for _ in range(4))
        chosen = th.zeros(n_students, n_actions, dtype=th.long, device=device)
        return cls(loss, value_loss, agree, [0] * n_students, [0] * n_students, chosen, spread)


def output_spread(scores: th.Tensor) -> th.Tensor:
    """
    How far outputs differ between observations: the largest ``max - min`` over the batch of any one output.

    :param scores: ``(batch, outputs)``, or ``(batch, students, outputs)`` for packed students
    :return: a scalar, or one spread per student
    """
    if len(scores) == 0:
        return scores.new_zeros(scores.shape[1:-1])
    return (scores.amax(dim=0) - scores.amin(dim=0)).amax(dim=-1)


def fused_optimizer(optimizer: th.optim.Optimizer) -> th.optim.Optimizer:
    """
    The same Adam/AdamW optimiser with its fused kernel, which cuts the per-step cost of small students.

    Other optimisers, optimisers that already hold state, and devices without fused kernels are kept as they are.

    :param optimizer: a student's fresh optimiser
    :return: the optimiser to use
    """
    if type(optimizer) not in (th.optim.Adam, th.optim.AdamW) or optimizer.state:
        return optimizer
    if any(group.get("fused") or group.get("differentiable") for group in optimizer.param_groups):
        return optimizer
    groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
    try:
        return type(optimizer)(groups)  # type: ignore[call-arg]
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device or dtype
        return optimizer


def acting_optimizer(student: BasePolicy) -> th.optim.Optimizer:
    """:return: the optimiser of a student's acting path (the actor's, for SAC and TD3 policies)."""
    return student.actor.optimizer if isinstance(student, SACPolicy | TD3Policy) else student.optimizer


def set_acting_optimizer(student: BasePolicy, optimizer: th.optim.Optimizer) -> None:
    """Give a student's acting path this optimiser (so that its own ``optimizer`` attribute stays the one in use)."""
    if isinstance(student, SACPolicy | TD3Policy):
        student.actor.optimizer = optimizer
    else:
        student.optimizer = optimizer


class Distiller:
    """
    Updates one or more students towards a teacher on batches of observations.

    Owns the students' optimisation and its own random generators: minibatches are shuffled with a
    private ``np.random.Generator``, and every update runs under ``torch.random.fork_rng`` with a
    private torch state, so the global generators that SB3 and the teacher use never move.

    :param teacher: the teacher
    :param students: name -> student policy (built for the teacher's spaces)
    :param config: the distillation options
    :param seed: seed of the private generators (``None``: fresh entropy)
    """

    def __init__(
        self, teacher: Teacher, students: Mapping[str, BasePolicy], config: DistillConfig, seed: int | None = None
    ) -> None:
        if not students:
            raise ValueError("at least one student is needed")
        self.teacher = teacher
        self.students = dict(students)
        self.config = config
        self.loss = self._resolve_loss(config.loss, teacher, self.students)
        self.policy_loss = get_loss(self.loss)
        #: discrete actions: agreement of greedy actions; continuous: squared error of the actions
        self.continuous = teacher.kind in CONTINUOUS_KINDS
        self.temperature = config.temperature if config.temperature is not None else DEFAULT_TEMPERATURE[teacher.kind]
        self.distill_value = {name: self._resolve_distill_value(name, s) for name, s in self.students.items()}
        #: each student's acting parameters
        self.student_parameters = {name: count_acting_parameters(s) for name, s in self.students.items()}
        #: each student's optimiser (the actor's for SAC/TD3 students: only the acting path is distilled)
        self.optimizers = {name: fused_optimizer(acting_optimizer(s)) for name, s in self.students.items()}
        for student, optimizer in zip(self.students.values(), self.optimizers.values(), strict=True):
            set_acting_optimizer(student, optimizer)
        #: the students run as one network when they are MLPs (:mod:`~sb3_distill.packing`), else ``None``
        self.packed = None if self.continuous else PackedStudents.build(self.students, self.distill_value)
        #: whether observation batches are images as SB3's CNNs take them (uint8, channels first)
        self.channel_first_images = is_image_space(teacher.observation_space) and is_image_space_channels_first(
            teacher.observation_space  # type: ignore[arg-type]
        )
        self.skipped_updates = dict.fromkeys(self.students, 0)
        #: observations left out because the teacher's outputs for them were not finite
        self.non_finite_targets = 0
        self._warned_non_finite_targets = False
        self.total_time_s = 0.0
        self._warned_non_finite = False
        #: per student: whether it ever took several greedy actions, and for how many updates since it took one
        self.constant_updates: dict[str, int] = {}
        #: how many times each student was re-initialised after collapsing (:meth:`watch_for_collapse`)
        self.collapse_resets = dict.fromkeys(self.students, 0)
        #: the students whose value head was set to the level of the teacher's values (:meth:`calibrate_values`)
        self.values_calibrated: set[str] = set()
        numpy_seed, torch_seed = np.random.SeedSequence(seed).generate_state(2)
        #: the distiller's own NumPy generator (minibatch order, replay sampling): never the global one
        self.rng = np.random.default_rng(int(numpy_seed))
        self._torch_states = self._initial_torch_states(int(torch_seed))
        #: whether an update drew from torch's generator (``None``: no update yet); see :meth:`fit`
        self.draws_random: bool | None = None

    @classmethod
    def for_teacher(
        cls,
        model: BaseAlgorithm,
        specs: Mapping[str, tuple[StudentSpec, dict[str, Any] | None]],
        config: DistillConfig,
        students_seed: int | None,
        distiller_seed: int | None,
        normalization: dict[str, Any] | None = None,
    ) -> Distiller:
        """
        The one setup of every path: the teacher's view, its students built for its spaces, this distiller.

        :param model: the teacher
        :param specs: the students, as :func:`~sb3_distill.students.student_specs` names them
        :param config: the distillation options
        :param students_seed: seed of the students' initialisation
        :param distiller_seed: seed of the distiller's private generators
        :param normalization: the ``VecNormalize`` statistics the students' inputs are normalised with
        :return: the distiller, holding teacher and students
        """
        teacher = Teacher(model)
        students = make_students(
            specs,
            teacher.observation_space,
            teacher.action_space,
            model.policy_aliases,
            learning_rate=config.learning_rate_at(1.0),
            seed=students_seed,
            device=teacher.device,
            teacher_policy=model.policy,
            distill_value=config.distill_value,
        )
        distiller = cls(teacher, students, config, seed=distiller_seed)
        distiller.set_obs_normalization(normalization)
        return distiller

    def target_memory(self, size: int, dtype: np.dtype | type | None = None) -> TargetMemory:
        """
        :param size: how many observations it holds
        :param dtype: the observations' dtype in memory (``None``: the teacher's observation space's)
        :return: an empty memory for observations and this teacher's targets (values when distilled)
        """
        view = self.teacher
        action_space = view.action_space
        n_scores = int(action_space.n) if isinstance(action_space, spaces.Discrete) else int(action_space.shape[0])
        with_log_std = view.kind in (GAUSSIAN, SQUASHED_GAUSSIAN)
        with_values = any(self.distill_value.values())
        return TargetMemory(size, view.observation_space, n_scores, with_values, with_log_std, dtype=dtype)

    def set_obs_normalization(self, normalization: dict[str, Any] | None) -> None:
        """
        Record in every student the ``VecNormalize`` statistics its inputs are normalised with (for ``wrap_env``).

        :param normalization: :func:`~sb3_distill.normalization.obs_normalization_of`'s snapshot, or ``None``
        """
        for student in self.students.values():
            record_obs_normalization(student, normalization)

    def result(self) -> BasePolicy | dict[str, BasePolicy]:
        """:return: the student when a single one was given, else the dict name -> student"""
        students = self.students
        return students[SINGLE_STUDENT] if list(students) == [SINGLE_STUDENT] else dict(students)

    @property
    def compression(self) -> dict[str, float]:
        """Each student's acting parameters / the (current) teacher's."""
        return {name: count / self.teacher.acting_parameters for name, count in self.student_parameters.items()}

    @staticmethod
    def _resolve_loss(loss: str | None, teacher: Teacher, students: Mapping[str, BasePolicy]) -> str:
        """The loss, checked; a SAC teacher's KL (between Gaussians before the tanh) needs SAC students."""
        if teacher.kind != SQUASHED_GAUSSIAN:
            return loss_for_kind(loss, teacher.kind)
        others = sorted(name for name, s in students.items() if score_kind(s) != SQUASHED_GAUSSIAN)
        if loss == "kl" and others:
            raise TypeError(
                f"loss='kl' matches a SAC teacher's Gaussian before its tanh: students {others} are not SAC "
                f"policies (without gSDE); use loss='mse' (on the actions)"
            )
        return loss_for_kind(loss, teacher.kind)

    def set_teacher(self, teacher: Teacher) -> None:
        """
        Go on distilling from another teacher (the same callback on a new model), checked before it takes a step.

        Loss, temperature and value distillation were chosen for the first teacher's kind of outputs, so
        the new teacher must give the same kind (logits, Q-values, Gaussians or actions) and the same spaces.

        :param teacher: the new teacher
        """
        if teacher.kind != self.teacher.kind:
            raise ValueError(
                f"these students were distilled from a teacher whose outputs are {self.teacher.kind} "
                f"({self.teacher.name}); {teacher.name} gives {teacher.kind}: "
                f"loss, temperature and value distillation do not carry over, use a new callback"
            )
        for name, student in self.students.items():
            difference = spaces_mismatch(teacher, student)
            if difference is not None:
                raise ValueError(f"student {name!r} was built for other spaces than this teacher's: {difference}")
        self.teacher = teacher

    def _resolve_distill_value(self, name: str, student: BasePolicy) -> bool:
        wanted = self.config.distill_value
        possible = self.teacher.has_values and has_value_head(student)
        if wanted and not possible:
            missing = "teacher" if not self.teacher.has_values else f"student {name!r}"
            raise ValueError(
                f"distill_value=True needs state values from the teacher (actor-critic or Q-values) and a value head "
                f"on the student, but the {missing} has none "
                f"({type(self.teacher.policy if missing == 'teacher' else student).__name__})"
            )
        if wanted is None:  # a Q-value teacher's max_a Q for a critic CNN of its own only (distill_value doc)
            return possible and (has_value_head(self.teacher.policy) or has_critic_extractor(student))
        return bool(wanted)

    # -- private random generators -------------------------------------------------------------

    def _cuda_devices(self) -> list[int]:
        device = self.teacher.device
        return [device.index if device.index is not None else th.cuda.current_device()] if device.type == "cuda" else []

    def _initial_torch_states(self, seed: int) -> list[th.Tensor]:
        devices = self._cuda_devices()
        # Seed only the generators fork_rng restores: torch.manual_seed would reseed every CUDA device.
        with th.random.fork_rng(devices=devices):
            th.random.default_generator.manual_seed(seed)
            for device in devices:
                th.cuda.default_generators[device].manual_seed(seed)
            return [th.get_rng_state()] + [th.cuda.get_rng_state(d) for d in devices]

    def _torch_states_now(self) -> list[th.Tensor]:
        return [th.get_rng_state()] + [th.cuda.get_rng_state(d) for d in self._cuda_devices()]

    @contextmanager
    def private_torch_rng(self) -> Iterator[None]:
        """Run the block on this distiller's own torch generator state; the global one is restored after."""
        devices = self._cuda_devices()
        with th.random.fork_rng(devices=devices):
            th.set_rng_state(self._torch_states[0])
            for device, state in zip(devices, self._torch_states[1:], strict=True):
                th.cuda.set_rng_state(state, device)
            yield
            self._torch_states = self._torch_states_now()

    # -- the update ----------------------------------------------------------------------------

    def update(
        self,
        obs: th.Tensor,
        progress_remaining: float = 1.0,
        epochs: int | None = None,
        targets: PolicyOutputs | None = None,
    ) -> dict[str, Any]:
        """
        Distil the teacher into every student on one batch of observations.

        The teacher's targets are computed once, without gradients, and shared by all students and
        epochs. A minibatch whose loss is NaN or infinite is skipped (counted and warned about once).

        :param obs: observations on the teacher's device, as the teacher's policy takes them
        :param progress_remaining: the teacher's remaining progress (1 to 0), for learning-rate schedules
        :param epochs: passes over ``obs`` (default: the config's ``epochs``)
        :param targets: the teacher's outputs for ``obs`` when already known (offline memories store
            them); computed here otherwise
        :return: ``{"time_s", "learning_rate", "students": {name: {"loss", "agreement", "compression", ...}}}``
        """
        start_time = time.perf_counter()
        obs, targets = self.label(obs, targets)
        with self.private_torch_rng():
            state_before = self._torch_states_now()
            metrics = self.fit(obs, targets, progress_remaining, epochs)
            # Whether fitting draws from torch's generator (dropout, sampling students): only an update that
            # draws nothing may run outside this block, in a background thread (see ``fit``).
            drew = any(not th.equal(a, b) for a, b in zip(state_before, self._torch_states_now(), strict=True))
            self.draws_random = bool(self.draws_random) or drew
        return self.with_time(metrics, time.perf_counter() - start_time)

    def label(self, obs: th.Tensor, targets: PolicyOutputs | None = None) -> tuple[th.Tensor, PolicyOutputs]:
        """
        The observations in the layout the students train on, and the teacher's targets for them.

        Run it in the thread that trains the teacher: the teacher's weights are read here and only here.

        :param obs: observations on the teacher's device, as the teacher's policy takes them
        :param targets: the teacher's outputs for ``obs`` when already known; computed here otherwise
        :return: ``(obs, targets)``
        """
        if self.channel_first_images and obs.device.type == "cpu":
            # The same values and shape, stored channels-last: CPU convolutions of small students run their
            # backward pass 2-3x faster on it (an Atari 1.7% student's update: 17 ms instead of 40 per
            # minibatch of 128); the shuffles and minibatch slices below keep the layout.
            obs = obs.contiguous(memory_format=th.channels_last)
        if targets is None:
            with self.private_torch_rng():
                targets = self.teacher.targets(obs, with_values=any(self.distill_value.values()))
        return obs, targets

    def fit(
        self, obs: th.Tensor, targets: PolicyOutputs, progress_remaining: float = 1.0, epochs: int | None = None
    ) -> dict[str, Any]:
        """
        Update every student on observations already labelled by :meth:`label` (the teacher is not read).

        It runs on torch's current generator state: :meth:`update` runs it on the distiller's private one.
        Call it outside :meth:`private_torch_rng` (from a background thread) only when ``draws_random`` is
        ``False``: an update that drew nothing from the generator in the foreground draws nothing here.

        :param obs: the labelled observations
        :param targets: the teacher's outputs for them
        :param progress_remaining: the teacher's remaining progress (1 to 0), for learning-rate schedules
        :param epochs: passes over ``obs`` (default: the config's ``epochs``)
        :return: as :meth:`update`, without ``time_s``
        """
        epochs = self.config.epochs if epochs is None else epochs
        obs, targets = self._finite_rows(obs, targets)
        n_obs = len(obs)
        teacher_actions = (
            scaled_actions(self.teacher.policy, targets.scores) if self.continuous else targets.scores.argmax(dim=-1)
        )
        learning_rate = self.config.learning_rate_at(progress_remaining)
        n_actions = 0 if self.continuous else targets.scores.shape[-1]
        sums = _Sums.zeros(len(self.students), obs.device, n_actions)
        for student in self.students.values():
            if not student.training:  # SB3's predict() switches to eval mode itself; stay in train mode after
                student.set_training_mode(True)
        for optimizer in self.optimizers.values():
            update_learning_rate(optimizer, learning_rate)
        if targets.values is not None:
            self.calibrate_values(obs, targets.values)
        for epoch in range(epochs):
            # One shuffle per epoch; the minibatches are then contiguous slices (views, no copies).
            order = th.as_tensor(self.rng.permutation(n_obs), device=obs.device)
            shuffled = _Batch(
                obs=obs[order],
                scores=targets.scores[order],
                values=None if targets.values is None else targets.values[order],
                log_std=None if targets.log_std is None else targets.log_std[order],
                actions=teacher_actions[order],
            )
            for begin in range(0, n_obs, self.config.batch_size):
                end = begin + self.config.batch_size
                batch = _Batch._make(None if part is None else part[begin:end] for part in shuffled)
                count_agreement = epoch == epochs - 1
                if self.packed is None or not self._packed_step(batch, sums, count_agreement):
                    self._step(batch, sums, count_agreement)
        students = {name: self._metrics(index, name, sums) for index, name in enumerate(self.students)}
        metrics: dict[str, Any] = {"learning_rate": learning_rate, "students": students}
        if not self.continuous:
            metrics["teacher_greedy_actions"] = len(th.unique(teacher_actions))
        metrics["teacher_output_spread"] = output_spread(targets.scores).item()
        return metrics

    def calibrate_values(self, obs: th.Tensor, values: th.Tensor) -> None:
        """
        Shift each value-distilling student's value head, once, so that its mean value on ``obs`` is the teacher's.

        A fresh value head starts near 0, and the teacher's values can be far from it (CartPole's are about 100,
        a DQN's ``max_a Q`` as much): regressed from there, the head took 60k CartPole steps to reach two thirds of
        the level, and a student's critic would begin fine-tuning that far off. Its bias set to the teacher's
        mean, only the differences between states remain to learn. A student re-initialised after collapsing is
        calibrated again.

        :param obs: the observations of the first batch a student learns values from
        :param values: the teacher's values for them
        """
        for name, student in self.students.items():
            if not self.distill_value[name] or name in self.values_calibrated:
                continue
            self.values_calibrated.add(name)
            value_net = getattr(student, "value_net", None)
            if not isinstance(value_net, nn.Linear) or value_net.bias is None:
                continue
            with th.no_grad(), eval_mode(student):
                predicted = policy_outputs(student, obs[:TARGET_CHUNK_SIZE]).values
                assert predicted is not None
                value_net.bias.add_(values[:TARGET_CHUNK_SIZE].mean() - predicted.mean())

    def with_time(self, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
        """:return: ``metrics`` with ``time_s``, the seconds an update took (also added to ``total_time_s``)"""
        self.total_time_s += seconds
        return {"time_s": seconds, **metrics}

    def _finite_rows(self, obs: th.Tensor, targets: PolicyOutputs) -> tuple[th.Tensor, PolicyOutputs]:
        """
        Drop the observations whose teacher outputs are not finite (counted in ``non_finite_targets``).

        A NaN target would otherwise poison a whole minibatch's loss (kl, mse) or become a label (nll).
        """
        finite = th.ones(len(obs), dtype=th.bool, device=obs.device)
        for part in targets:
            if part is not None:
                finite &= th.isfinite(part.reshape(len(part), -1)).all(dim=1)
        n_bad = len(obs) - int(finite.sum())  # one device sync per update, not per minibatch
        if n_bad == 0:
            return obs, targets
        self.non_finite_targets += n_bad
        if not self._warned_non_finite_targets:
            warnings.warn(
                f"{n_bad} of {len(obs)} observations have non-finite teacher outputs: they are left out "
                f"(counted in distill/non_finite_targets; further occurrences are not warned about)",
                RuntimeWarning,
            )
            self._warned_non_finite_targets = True
        values, log_std = targets.values, targets.log_std
        return obs[finite], PolicyOutputs(
            targets.scores[finite],
            None if values is None else values[finite],
            None if log_std is None else log_std[finite],
        )

    def _losses(self, name: str, student: BasePolicy, batch: _Batch) -> tuple[th.Tensor, th.Tensor | None, th.Tensor]:
        """One student's losses on one minibatch: ``(policy loss, value loss or None, the student's scores)``."""
        scores, values, log_std = policy_outputs(
            student, batch.obs, with_values=self.distill_value[name], detach_shared_features=True
        )
        if self.loss == "kl" and batch.log_std is not None:  # continuous actor-critics: KL between Gaussians
            if log_std is None:
                raise TypeError(f"student {name!r} has no Gaussian policy to match the teacher's: use loss='mse'")
            policy_loss = gaussian_kl_loss(scores, log_std, batch.scores, batch.log_std)
        elif self.continuous:  # loss="mse": on the actions, both in scaled units ([-1, 1] over the action range)
            teacher_actions = scaled_actions(self.teacher.policy, batch.scores)
            policy_loss = self.policy_loss(scaled_actions(student, scores), teacher_actions, self.temperature)
        else:  # kl / mse / nll on action scores, see losses.py
            policy_loss = self.policy_loss(scores, batch.scores, self.temperature)
        if not self.distill_value[name]:
            return policy_loss, None, scores
        assert values is not None
        assert batch.values is not None
        return policy_loss, value_loss(values, batch.values), scores

    def _packed_step(self, batch: _Batch, sums: _Sums, count_agreement: bool) -> bool:
        """
        One gradient step of every student on one minibatch, the students run as one network.

        The loss of student ``k`` is ``policy_loss[k] + vf_coef * value_loss[k]``, as in :meth:`_step`; each
        student's parameters only reach its own loss, so the backward pass of their sum gives each its own
        gradients.

        :return: ``False`` (nothing updated) when a student's loss is not finite: :meth:`_step` then
            handles the minibatch, skipping that student
        """
        assert self.packed is not None
        scores, values = self.packed(batch.obs)  # (batch, students, actions), (batch, students with values)
        policy_losses = self.policy_loss(scores, batch.scores.unsqueeze(1), self.temperature)
        value_index = self.packed.value_index
        totals = policy_losses
        value_losses = None
        if len(value_index):
            assert batch.values is not None
            value_losses = value_loss(values, batch.values.unsqueeze(1))
            totals = totals.index_add(0, value_index, value_losses, alpha=self.config.vf_coef)
        if not bool(th.isfinite(totals).all()):
            return False
        self._backward_and_step(list(self.students), [totals.sum()])
        sums.loss += policy_losses.detach()
        if value_losses is not None:
            sums.value_loss.index_add_(0, value_index, value_losses.detach())
        for index in range(len(self.students)):
            sums.updates[index] += 1
            if count_agreement:
                sums.seen[index] += len(batch.actions)
        if count_agreement:
            greedy = scores.detach().argmax(dim=-1)  # (batch, students)
            sums.agree += (greedy == batch.actions.unsqueeze(1)).sum(dim=0)
            sums.chosen += F.one_hot(greedy, sums.chosen.shape[1]).sum(dim=0)
            sums.spread = th.maximum(sums.spread, output_spread(scores.detach()))
        return True

    def _backward_and_step(self, names: list[str], losses: list[th.Tensor]) -> None:
        """One backward pass through ``losses``, then a (clipped) optimiser step of each named student."""
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        th.autograd.backward(losses)
        for name in names:
            if self.config.max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(self.students[name].parameters(), self.config.max_grad_norm)
            self.optimizers[name].step()

    def _step(self, batch: _Batch, sums: _Sums, count_agreement: bool) -> None:
        """
        One gradient step of every student on one minibatch.

        Each student's loss is ``policy loss + vf_coef * value loss``; the students share nothing, so
        one backward pass through their summed losses gives each its own gradients (one autograd call
        and one device sync per minibatch, whatever the number of students).
        """
        losses = {name: self._losses(name, student, batch) for name, student in self.students.items()}
        totals = {
            name: policy_loss if v_loss is None else policy_loss + self.config.vf_coef * v_loss
            for name, (policy_loss, v_loss, _) in losses.items()
        }
        finite = th.isfinite(th.stack(list(totals.values()))).tolist()
        updated = [name for name, ok in zip(totals, finite, strict=True) if ok]
        for name in totals.keys() - set(updated):
            self.skipped_updates[name] += 1
            if not self._warned_non_finite:
                warnings.warn(
                    f"non-finite distillation loss for student {name!r}: update skipped "
                    f"(counted in distill/skipped_updates; further occurrences are not warned about)",
                    RuntimeWarning,
                )
                self._warned_non_finite = True
        if not updated:
            return
        self._backward_and_step(updated, [totals[name] for name in updated])
        names = list(self.students)
        for name in updated:
            policy_loss, v_loss, scores = losses[name]
            index = names.index(name)
            sums.updates[index] += 1
            sums.loss[index] += policy_loss.detach()
            if v_loss is not None:
                sums.value_loss[index] += v_loss.detach()
            if count_agreement:
                if self.continuous:  # summed squared error of the actions (means), per observation
                    actions = scaled_actions(self.students[name], scores.detach())
                    sums.agree[index] += ((actions - batch.actions) ** 2).sum()
                else:
                    greedy = scores.detach().argmax(dim=-1)
                    sums.agree[index] += (greedy == batch.actions).sum()
                    sums.chosen[index] += F.one_hot(greedy, sums.chosen.shape[1]).sum(dim=0)
                sums.spread[index] = th.maximum(sums.spread[index], output_spread(scores.detach()))
                sums.seen[index] += len(batch.actions)

    def _metrics(self, index: int, name: str, sums: _Sums) -> dict[str, float]:
        updates, seen = sums.updates[index], sums.seen[index]
        metrics = {
            "loss": sums.loss[index].item() / updates if updates else float("nan"),
            ("action_error" if self.continuous else "agreement"): sums.agree[index].item() / seen
            if seen
            else float("nan"),
            "compression": self.compression[name],
            "skipped_updates": float(self.skipped_updates[name]),
        }
        if self.distill_value[name]:
            metrics["value_loss"] = sums.value_loss[index].item() / updates if updates else float("nan")
        if not self.continuous and seen:
            metrics["greedy_actions"] = int((sums.chosen[index] > 0).sum())
        if seen:
            metrics["output_spread"] = sums.spread[index].item()
        return metrics

    def record(self, logger: Logger, metrics: Mapping[str, Any], n_distillations: int) -> list[str]:
        """
        Record one update's metrics in an SB3 logger under ``distill/`` (``distill/<name>/`` with several students),
        and re-initialise the students that have collapsed (:meth:`watch_for_collapse`).

        :param logger: the logger (the teacher's, or the offline run's)
        :param metrics: what :meth:`update` returned
        :param n_distillations: how many updates so far
        :return: the names of the students re-initialised
        """
        prefix = "distill/"
        logger.record(prefix + "time_s", metrics["time_s"])
        logger.record(prefix + "learning_rate", metrics["learning_rate"])
        logger.record(prefix + "n_distillations", n_distillations, exclude="tensorboard")
        logger.record(prefix + "non_finite_targets", self.non_finite_targets)
        for key in ("teacher_greedy_actions", "teacher_output_spread"):
            if key in metrics:
                logger.record(prefix + key, metrics[key])
        reset = self.watch_for_collapse(metrics)
        for name, values in metrics["students"].items():
            student_prefix = prefix if len(self.students) == 1 else f"{prefix}{name}/"
            for key, value in values.items():
                logger.record(student_prefix + key, value)
            logger.record(student_prefix + "collapse_resets", self.collapse_resets[name])
        return reset

    def watch_for_collapse(self, metrics: Mapping[str, Any]) -> list[str]:
        """
        Re-initialise a student that has collapsed: the same outputs for every observation, update after update
        (``COLLAPSE_UPDATES``), while the teacher's vary. Every unit of one of its ReLU layers is then dead, so what
        follows sees the same input whatever the observation and no gradient reaches the layers before: its
        weights are worth nothing, and a fresh start (:meth:`reset_student`) learns from the batches to come.
        Seen with DQN teachers on MinAtar (small MLP students at the default options early in training, CNN
        students given 4-8 passes; ``benchmarks/distill_settings.py``). Warned about once per student; counted in
        ``collapse_resets``. A student that takes one greedy action for a while with outputs that still vary is
        not collapsed (small students pass through such stretches and recover).

        :param metrics: what :meth:`update` returned
        :return: the names of the students re-initialised
        """
        teacher_varies = metrics.get("teacher_output_spread", 0.0) > CONSTANT_SPREAD
        reset = []
        for name, values in metrics["students"].items():
            spread = values.get("output_spread")
            if spread is None:
                continue
            constant = teacher_varies and spread <= CONSTANT_SPREAD
            self.constant_updates[name] = self.constant_updates.get(name, 0) + 1 if constant else 0
            if self.constant_updates[name] < COLLAPSE_UPDATES:
                continue
            if self.collapse_resets[name] == 0:
                key = "distill/" if len(self.students) == 1 else f"distill/{name}/"
                warnings.warn(
                    f"student {name!r} has collapsed: it has given the same outputs for every observation of the "
                    f"last {COLLAPSE_UPDATES} updates ({key}output_spread {spread:.1e}) while the teacher's varied "
                    f"(every unit of one of its layers dead, which gradient steps do not undo). It is re-initialised "
                    f"and learns again from the next batch; {key}collapse_resets counts this (a lower learning_rate "
                    f"or fewer epochs make it rarer)",
                    RuntimeWarning,
                )
            self.reset_student(name)
            reset.append(name)
        return reset

    def reset_student(self, name: str) -> None:
        """
        Re-initialise a student in place: each of its layers' ``reset_parameters`` (PyTorch's initialisation), drawn
        from this distiller's own generator; its optimiser forgets its moments. The same parameter objects stay
        (optimisers and packed students keep reading them).

        :param name: the student's name
        """
        student = self.students[name]
        with th.no_grad(), self.private_torch_rng():
            for module in student.modules():
                reset_parameters = getattr(module, "reset_parameters", None)
                if module is not student and callable(reset_parameters):
                    reset_parameters()
        self.optimizers[name].state.clear()
        self.values_calibrated.discard(name)
        self.constant_updates[name] = 0
        self.collapse_resets[name] += 1

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """:return: optimiser states, private generator states and counters (not the students' weights)."""
        return {
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": [state.clone() for state in self._torch_states],
            "skipped_updates": dict(self.skipped_updates),
            "non_finite_targets": self.non_finite_targets,
            "collapse_resets": dict(self.collapse_resets),
            "values_calibrated": sorted(self.values_calibrated),
            "total_time_s": self.total_time_s,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """
        Restore what :meth:`state_dict` saved.

        :param state: the saved state
        """
        if sorted(state["optimizers"]) != sorted(self.students):
            raise ValueError(
                f"checkpoint holds students {sorted(state['optimizers'])}, expected {sorted(self.students)}"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.rng.bit_generator.state = state["numpy_rng"]
        if len(state["torch_rng"]) == len(self._torch_states):
            self._torch_states = [s.clone() for s in state["torch_rng"]]
        else:  # resumed on another kind of device: keep the CPU state, fresh CUDA ones
            self._torch_states[0] = state["torch_rng"][0].clone()
        self.skipped_updates = dict(state["skipped_updates"])
        self.non_finite_targets = int(state.get("non_finite_targets", 0))
        self.collapse_resets = {name: int(state.get("collapse_resets", {}).get(name, 0)) for name in self.students}
        # checkpoints from before calibration: their students have learned already, leave their value heads be
        self.values_calibrated = set(state.get("values_calibrated", self.students)) & set(self.students)
        self.total_time_s = float(state["total_time_s"])
