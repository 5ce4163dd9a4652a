"""The RL-Zoo run a callback is trained in, found without importing RL-Zoo (no dependency, no import cycle).

RL-Zoo builds the callbacks of a hyperparameter file before it knows the run's folder; a callback
that saves its students next to the teacher finds the folder here, when training starts.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ZooRun:
    """The RL-Zoo run a callback is part of."""

    #: the run's folder (``logs/ppo/PongNoFrameskip-v4_1``), where RL-Zoo saves the model
    save_path: str
    #: the environment's name as RL-Zoo writes it in file names
    env_name: str


def _experiment_manager(methods: tuple[str, ...]) -> Any:
    """The ``ExperimentManager`` up the call stack whose method (one of ``methods``) is running, or ``None``."""
    exp_manager = sys.modules.get("rl_zoo3.exp_manager")
    if exp_manager is None:
        return None
    frame = sys._getframe(2)
    while frame is not None:
        manager = frame.f_locals.get("self")
        if frame.f_code.co_name in methods and isinstance(manager, exp_manager.ExperimentManager):
            return manager
        frame = frame.f_back  # type: ignore[assignment]
    return None


def current_zoo_run() -> ZooRun | None:
    """
    The RL-Zoo experiment being trained, when called from inside ``ExperimentManager.learn``.

    RL-Zoo builds YAML callbacks before it knows the run's folder, so a callback finds it by
    looking up the call stack for the ``ExperimentManager`` that called ``model.learn``. Optuna
    trials (``ExperimentManager.objective``) are not runs: this returns ``None`` there.

    :return: the run, or ``None`` when not training under RL-Zoo
    """
    manager = _experiment_manager(("learn",))
    if manager is None:
        return None
    return ZooRun(save_path=str(manager.save_path), env_name=str(manager.env_name))


def zoo_env_maker() -> Callable[[], Any] | None:
    """
    A maker of one more environment of the RL-Zoo experiment training now (a run, or an Optuna trial), made as
    RL-Zoo makes its evaluation environment: same wrappers, frame stack, ``VecNormalize`` frozen.

    :return: the maker, or ``None`` when not training under RL-Zoo
    """
    manager = _experiment_manager(("learn", "objective"))
    if manager is None:
        return None
    return functools.partial(manager.create_envs, 1, eval_env=True, no_log=True)
