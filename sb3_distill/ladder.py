"""Ready student families with one size knob, and a ladder of students at chosen compression ratios.

Each family maps an integer ``width`` to a student spec ``(policy alias, policy_kwargs)``, the tuple
form that ``RealTimeDistillCallback(student={name: spec})`` and ``distill`` accept:

- :func:`mlp_student` for vector observations: ``net_arch=[width] * depth``;
- :func:`atari_cnn_student` for 84x84 frame stacks: :class:`~sb3_distill.architectures.SmallCNN` with
  channels ``(width, 2 * width, 2 * width)`` and ``7 * width // 2`` features, no hidden layer after it;
- :func:`minatar_cnn_student` for MinAtar's 10x10xC binary frames:
  :class:`~sb3_distill.architectures.MinAtarCNN` with ``width`` channels and ``2 * width`` features;
  :func:`minatar_pooled_student`, the same with a 2x2 max-pooling after the convolution (pass it as
  ``family=``; compared with the default family in ``benchmarks/student_architectures.py``).

Acting parameters (the actor path of a PPO/A2C policy, the Q-network of DQN: the same for these heads)
of the students :func:`ladder` builds at 1.7%, 5% and 25% for the usual teachers:

- MLP, CartPole (4 inputs, 2 actions), PPO teacher ``[64, 64]`` (4,610): widths 11 / 33 / 164,
  79 / 233 / 1,150 parameters (1.71 / 5.05 / 24.9%);
- Atari CNN, 4x84x84 frames, 6 actions, Nature-CNN teacher (1,687,206): widths 8 / 14 / 32,
  28,594 / 84,559 / 430,006 parameters (1.69 / 5.01 / 25.5%);
- MinAtar CNN, Breakout (10x10x4, 3 actions), ``[256, 256]`` MLP teacher (169,219): widths 5 / 8 / 18,
  3,428 / 8,555 / 42,285 parameters (2.03 / 5.06 / 25.0%: width 4 would give 1.32%).

:func:`ladder` picks, for each target ratio, the width whose student is nearest to it (in log scale)
and reports the exact ratio reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space

from sb3_distill.architectures import MinAtarCNN, SmallCNN
from sb3_distill.outputs import count_acting_parameters, inherited_student_kwargs
from sb3_distill.serialization import PathLike
from sb3_distill.teachers import Teacher, load_teacher

#: A student spec as the ``student`` dict takes it: (policy alias, policy_kwargs).
Spec = tuple[str, dict[str, Any]]

#: The widths :func:`ladder` searches.
MAX_WIDTH = 4096


def mlp_student(width: int, depth: int = 1) -> Spec:
    """
    :param width: units per hidden layer
    :param depth: number of hidden layers
    :return: an ``MlpPolicy`` student with ``net_arch=[width] * depth``
    """
    return "MlpPolicy", {"net_arch": [width] * depth}


def atari_cnn_student(width: int) -> Spec:
    """
    :param width: channels of the first convolution (8 gives about 1.7% of SB3's Nature-CNN actor)
    :return: a ``CnnPolicy`` student with a :class:`~sb3_distill.architectures.SmallCNN` extractor
    """
    return "CnnPolicy", {
        "features_extractor_class": SmallCNN,
        "features_extractor_kwargs": {"channels": (width, 2 * width, 2 * width), "features_dim": 7 * width // 2},
        "net_arch": [],
    }


def minatar_cnn_student(width: int) -> Spec:
    """
    :param width: channels of the convolution (8 gives about 5% of a ``[256, 256]`` MLP teacher)
    :return: an ``MlpPolicy`` student with a :class:`~sb3_distill.architectures.MinAtarCNN` extractor
    """
    return "MlpPolicy", {
        "features_extractor_class": MinAtarCNN,
        "features_extractor_kwargs": {"channels": width, "features_dim": 2 * width},
        "net_arch": [],
    }


def minatar_pooled_student(width: int) -> Spec:
    """
    MinAtar students whose linear layer reads the convolution's features max-pooled 2x2: a quarter of the
    positions, so the same parameters buy twice the channels and features of :func:`minatar_cnn_student`.

    At the 1.7% budget, both families students of the same PPO teachers (MinAtar SpaceInvaders, 1M steps,
    seeds 0-4, ``benchmarks/student_architectures.py``): random-normalised 0.58 / 0.94 / 0.71 / 0.45 / 0.54
    against the default family's 0.46 / 0.72 / 0.72 / 0.64 / 0.51 (medians 0.58 and 0.64); Seaquest seeds
    0-1: 0.85 / 0.88 against 0.84 / 0.83. Students of DQN teachers (MinAtar Breakout, 500k steps) at the 5%
    budget: distilled offline from six final teachers, two student seeds each (``benchmarks/q_temperature.py``),
    median 0.95 against 0.86, ahead in 9 pairs of 12 (Wilcoxon p = 0.005); in real time (seeds 6-12) median
    0.80 against 0.87, ahead in 3 of 7. Not the default; the family for offline distillation of Q-value teachers.

    :param width: channels of the convolution (features: ``2 * width``)
    :return: an ``MlpPolicy`` student with a pooling :class:`~sb3_distill.architectures.MinAtarCNN` extractor
    """
    return "MlpPolicy", {
        "features_extractor_class": MinAtarCNN,
        "features_extractor_kwargs": {"channels": width, "features_dim": 2 * width, "pool": 2},
        "net_arch": [],
    }


def student_family(observation_space: spaces.Space) -> Callable[[int], Spec]:
    """
    The family that suits an observation space, as the teacher's policy sees it.

    :param observation_space: the teacher's policy's observation space
    :return: :func:`atari_cnn_student` for uint8 images (channel-first, at least 36x36),
        :func:`minatar_cnn_student` for other 3-d boxes, :func:`mlp_student` otherwise
    """
    if isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 3:
        if is_image_space(observation_space, check_channels=False, normalized_image=False):
            if min(observation_space.shape[1:]) < 36:
                raise ValueError(
                    f"images of {observation_space.shape} are too small for the Atari CNN family "
                    "(8x8 stride-4 then 4x4 stride-2 then 3x3 convolutions need at least 36x36): pass family="
                )
            return atari_cnn_student
        return minatar_cnn_student
    return mlp_student


class StudentLadder(dict[str, Spec]):
    """
    Student specs by name, as :func:`ladder` built them; a ``dict`` the ``student`` argument takes.

    :ivar targets: name -> the compression ratio asked for
    :ivar compression: name -> the ratio reached (student / teacher acting parameters)
    :ivar parameters: name -> the student's acting parameters
    :ivar widths: name -> the family's width
    """

    def __init__(self) -> None:
        super().__init__()
        self.targets: dict[str, float] = {}
        self.compression: dict[str, float] = {}
        self.parameters: dict[str, int] = {}
        self.widths: dict[str, int] = {}

    def describe(self) -> str:
        """:return: one line per student: name, width, parameters, ratio reached and asked for"""
        return "\n".join(
            f"{name}: width {self.widths[name]}, {self.parameters[name]:,} acting parameters, "
            f"{self.compression[name]:.2%} of the teacher (asked {self.targets[name]:.2%})"
            for name in self
        )


def ladder_name(ratio: float) -> str:
    """:return: the name :func:`ladder` gives the student for a target ratio: ``0.017 -> "1.7pct"``"""
    return f"{ratio * 100:.3g}pct"


def ladder(
    teacher: BaseAlgorithm | PathLike,
    ratios: Iterable[float] = (0.017, 0.05, 0.25),
    family: Callable[[int], Spec] | None = None,
    verbose: int = 0,
) -> StudentLadder:
    """
    One student per target compression ratio, each the family member nearest to its target.

    ``RealTimeDistillCallback(student=ladder(teacher))`` then distils all of them from one teacher run.

    :param teacher: the teacher model (trained or not: only its spaces and size matter), or its zip file
    :param ratios: target shares of the teacher's acting parameters, each in (0, 1]
    :param family: width -> ``(alias, policy_kwargs)``; ``None``: :func:`student_family` of the
        teacher's observation space
    :param verbose: 1 prints what was built
    :return: the specs by name (``"1.7pct"``, ``"5pct"``, ``"25pct"``), with the exact ratios reached
    """
    ratios = list(ratios)
    if not ratios:
        raise ValueError("ratios is empty: give at least one target compression ratio")
    for ratio in ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise ValueError(f"compression ratios must be numbers in (0, 1], got {ratio!r}")
    if not isinstance(teacher, BaseAlgorithm):
        teacher = load_teacher(teacher, device="cpu")
    view = Teacher(teacher)
    family = family or student_family(view.observation_space)
    aliases: Mapping[str, type[BasePolicy]] = teacher.policy_aliases
    counts: dict[int, int] = {}

    def spec(width: int) -> Spec:
        alias, kwargs = family(width)
        return alias, {**inherited_student_kwargs(view.policy, aliases[alias]), **kwargs}

    def parameters(width: int) -> int:
        if width not in counts:
            alias, kwargs = spec(width)
            policy = aliases[alias](view.observation_space, view.action_space, lambda _: 0.0, **kwargs)
            counts[width] = count_acting_parameters(policy)
        return counts[width]

    result = StudentLadder()
    for ratio in ratios:
        target = ratio * view.acting_parameters
        # The smallest width reaching the target: double until past it, then bisect (counts grow with width).
        high = 1
        while parameters(high) < target and high < MAX_WIDTH:
            high = min(2 * high, MAX_WIDTH)
        low = high // 2 + 1 if high > 1 else 1
        while low < high:
            middle = (low + high) // 2
            if parameters(middle) < target:
                low = middle + 1
            else:
                high = middle
        candidates = [width for width in (low - 1, low) if width >= 1]
        width = min(candidates, key=lambda w: abs(math.log(parameters(w) / target)))
        name = ladder_name(ratio)
        if name in result:
            raise ValueError(f"ratio {ratio} is given twice")
        result[name] = spec(width)
        result.targets[name] = ratio
        result.widths[name] = width
        result.parameters[name] = parameters(width)
        result.compression[name] = parameters(width) / view.acting_parameters
    if verbose >= 1:
        print(result.describe())
    return result
