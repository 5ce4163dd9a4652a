"""The RL-Zoo run a callback is trained in, found without importing RL-Zoo (no dependency, no import cycle).

RL-Zoo builds the callbacks of a hyperparameter file before it knows the run's folder; a callback
that saves its students next to the teacher finds the folder here, when training starts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class ZooRun:
    """The RL-Zoo run a callback is part of."""

    #: the run's folder (``logs/ppo/PongNoFrameskip-v4_1``), where RL-Zoo saves the model
    save_path: str
    #: the environment's name as RL-Zoo writes it in file names
    env_name: str


def current_zoo_run() -> ZooRun | None:
    """
    The RL-Zoo experiment being trained, when called from inside ``ExperimentManager.learn``.

    RL-Zoo builds YAML callbacks before it knows the run's folder, so a callback finds it by
    looking up the call stack for the ``ExperimentManager`` that called ``model.learn``. Optuna
    trials (``ExperimentManager.objective``) are not runs: this returns ``None`` there.

    :return: the run, or ``None`` when not training under RL-Zoo
    """
    exp_manager = sys.modules.get("rl_zoo3.exp_manager")
    if exp_manager is None:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        manager = frame.f_locals.get("self")
        if frame.f_code.co_name == "learn" and isinstance(manager, exp_manager.ExperimentManager):
            return ZooRun(save_path=str(manager.save_path), env_name=str(manager.env_name))
        frame = frame.f_back  # type: ignore[assignment]
    return None
