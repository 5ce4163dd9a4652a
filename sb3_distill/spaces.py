"""Comparing observation and action spaces the way a user means them, and saying what differs.

Agents saved by older SB3 with ``gym`` hold ``Box`` bounds of ``±3.4028235e38`` (float32's largest
value) where gymnasium writes ``±inf``: the same space. Everything else is compared exactly.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from gymnasium import spaces

#: ``abs(bound)`` at or above this is unbounded (float32's largest finite value, as old ``gym`` stored infinities).
UNBOUNDED = float(np.finfo(np.float32).max)


def _unbounded_as_inf(bounds: np.ndarray) -> np.ndarray:
    bounds = np.asarray(bounds, dtype=np.float64)
    return np.where(np.abs(bounds) >= UNBOUNDED, np.copysign(np.inf, bounds), bounds)


def canonical_space(space: spaces.Space) -> spaces.Space:
    """
    The same space with float32-max ``Box`` bounds written as infinities (other spaces unchanged).

    :param space: a space, maybe unpickled from an agent saved with ``gym``
    :return: ``space`` itself when nothing changes, else a new ``Box``
    """
    if not isinstance(space, spaces.Box) or not np.issubdtype(space.dtype, np.floating):
        return space
    low, high = _unbounded_as_inf(space.low), _unbounded_as_inf(space.high)
    if np.array_equal(low, space.low) and np.array_equal(high, space.high):
        return space
    return spaces.Box(low=low.astype(space.dtype), high=high.astype(space.dtype), dtype=space.dtype)  # type: ignore[arg-type]


def space_mismatch(expected: spaces.Space, got: spaces.Space) -> str | None:
    """
    What makes two spaces different, in words, or ``None`` when they are the same space.

    :param expected: the space that is wanted (the teacher's)
    :param got: the space that is offered (the environment's, the student's)
    :return: ``None``, or a phrase naming the difference: type, shape, dtype, bounds or action count
    """
    if type(expected) is not type(got):
        return f"{type(got).__name__} instead of {type(expected).__name__}"
    if isinstance(expected, spaces.Discrete) and isinstance(got, spaces.Discrete):
        if expected.n != got.n:
            return f"{int(got.n)} actions instead of {int(expected.n)}"
        if expected.start != got.start:
            return f"actions start at {int(got.start)} instead of {int(expected.start)}"
        return None
    if isinstance(expected, spaces.Box) and isinstance(got, spaces.Box):
        if expected.shape != got.shape:
            return f"shape {got.shape} instead of {expected.shape}"
        if expected.dtype != got.dtype:
            return f"dtype {got.dtype} instead of {expected.dtype}"
        for name, want, have in (("low", expected.low, got.low), ("high", expected.high, got.high)):
            want_, have_ = _unbounded_as_inf(want), _unbounded_as_inf(have)
            differ = ~((want_ == have_) | (np.isnan(want_) & np.isnan(have_)))
            if differ.any():
                index = tuple(int(i) for i in np.argwhere(differ)[0])
                return (
                    f"{name} bound {float(have_[index])} instead of {float(want_[index])} at index {index} "
                    f"({int(differ.sum())} of {differ.size} differ)"
                )
        return None
    return None if expected == got else f"{got} instead of {expected}"


def same_space(a: spaces.Space, b: spaces.Space) -> bool:
    """:return: whether ``a`` and ``b`` are the same space (float32-max bounds and infinities alike)."""
    return space_mismatch(a, b) is None


class HasSpaces(Protocol):
    """A policy, an environment or a teacher: anything with an observation and an action space."""

    @property
    def observation_space(self) -> spaces.Space: ...

    @property
    def action_space(self) -> spaces.Space: ...


def spaces_mismatch(expected: HasSpaces, got: HasSpaces) -> str | None:
    """
    What differs between two objects' observation and action spaces, or ``None`` when both are the same.

    :param expected: the teacher (or its policy)
    :param got: the environment, the student, the other policy
    :return: ``"observation space: shape (6,) instead of (4,)"``, say
    """
    for what in ("observation", "action"):
        difference = space_mismatch(getattr(expected, f"{what}_space"), getattr(got, f"{what}_space"))
        if difference is not None:
            return f"{what} space: {difference}"
    return None
