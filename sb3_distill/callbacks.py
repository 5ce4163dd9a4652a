"""What offline and simulator-free runs share: SB3 callbacks (``learn(..., callback=...)`` takes what SB3's ``learn``
takes), and the model-like face they show those callbacks."""

from __future__ import annotations

from collections.abc import Callable

from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import BasePolicy

from sb3_distill.distiller import Distiller, check_positive


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


class DistillationRun:
    """
    The model-like face of an offline or simulator-free run, for SB3 callbacks: ``num_timesteps``, ``logger``,
    ``students``; subclasses set ``distiller`` and ``logger`` in ``__init__`` and define ``learn``.
    """

    distiller: Distiller
    logger: Logger
    num_timesteps: int = 0

    @property
    def students(self) -> dict[str, BasePolicy]:
        """The students, by name."""
        return self.distiller.students

    def _start_learning(self, n: int, what: str, log_interval: int, callback: DistillCallback) -> BaseCallback:
        """Check ``learn``'s arguments and bind its callback to this run; :return: the callback."""
        check_positive(what, n, integer=True)
        check_positive("log_interval", log_interval, integer=True)
        callback = as_callback(callback)
        callback.init_callback(self)  # type: ignore[arg-type]
        return callback
