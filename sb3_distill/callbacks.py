"""SB3 callbacks for offline and simulator-free runs: ``learn(..., callback=...)`` takes what SB3's ``learn`` takes."""

from __future__ import annotations

from collections.abc import Callable

from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.policies import BasePolicy


class _AfterEachUpdate(BaseCallback):
    """A plain function ``fn(steps, students)`` called after every update; returning ``False`` stops the run."""

    def __init__(self, fn: Callable[[int, dict[str, BasePolicy]], bool | None]) -> None:
        super().__init__()
        self.fn = fn
        self.go_on = True

    def _on_rollout_end(self) -> None:
        self.go_on = self.fn(self.model.num_timesteps, self.model.students) is not False  # type: ignore[attr-defined]

    def _on_step(self) -> bool:
        return self.go_on


#: What ``callback`` accepts: an SB3 callback, a list of them, or ``fn(steps, students) -> bool | None``.
DistillCallback = BaseCallback | list[BaseCallback] | Callable[[int, dict[str, BasePolicy]], bool | None] | None


def as_callback(callback: DistillCallback) -> BaseCallback:
    """:return: ``callback`` as one SB3 callback (a plain function is called after every update)"""
    if isinstance(callback, BaseCallback):
        return callback
    if isinstance(callback, list):
        return CallbackList(callback)
    if callback is None:
        return CallbackList([])
    if callable(callback):
        return _AfterEachUpdate(callback)
    raise TypeError(f"callback must be an SB3 callback, a list of them or a function, got {type(callback).__name__}")
