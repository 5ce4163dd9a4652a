"""Tuning distillation options with RL-Zoo's Optuna search (``sb3-distill train -optimize --tune student``).

RL-Zoo's ``-optimize`` samples the *teacher's* hyperparameters and scores each trial by the
teacher's return; the distillation callback in the YAML runs in every trial but cannot change
that score (it never changes the teacher). To tune the distillation itself, this module swaps in
an objective that keeps the teacher's settings from the file, samples the callback's options
(``distill_learning_rate``, ``distill_epochs``, ``distill_batch_size``, and ``distill_temperature``
for Q-value teachers) and scores each trial by the *student's* evaluation return, reported at
``--n-evaluations`` points for Optuna's pruner. Everything else is RL-Zoo's: samplers, pruners,
``--n-trials``, ``--n-jobs``, and ``--storage``/``--study-name``, through which several machines
share one study (each runs the same command against the same storage).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.utils import ALGOS, get_callback_list
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from sb3_distill.realtime import RealTimeDistillCallback
from sb3_distill.zoo import CALLBACK_NAME

#: Teachers whose action scores are Q-values: the KL temperature matters for them.
Q_VALUE_ALGOS = ("dqn", "qrdqn")


def sample_distill_options(trial: optuna.Trial, algo: str) -> dict[str, Any]:
    """
    The distillation options of one trial.

    :param trial: the Optuna trial
    :param algo: the teacher's algorithm
    :return: keyword arguments for :class:`~sb3_distill.RealTimeDistillCallback`
    """
    options: dict[str, Any] = {
        "learning_rate": trial.suggest_float("distill_learning_rate", 1e-4, 1e-2, log=True),
        "epochs": trial.suggest_categorical("distill_epochs", [1, 2, 4, 8]),
        "batch_size": trial.suggest_categorical("distill_batch_size", [32, 64, 128, 256]),
    }
    if algo in Q_VALUE_ALGOS:
        options["temperature"] = trial.suggest_float("distill_temperature", 1e-3, 1.0, log=True)
    return options


class StudentTrialEvalCallback(BaseCallback):
    """
    Evaluates the student of a distillation callback during a trial, reports to Optuna and prunes.

    Runs after the distillation callback in the same list, so the final evaluation (when training
    ends) sees the student after its last distillation.

    :param distill: the distillation callback (one student)
    :param eval_env: the evaluation environment (RL-Zoo's, normalised like the teacher's)
    :param trial: the Optuna trial
    :param n_eval_episodes: episodes per evaluation
    :param eval_freq: evaluate every ``eval_freq`` calls (steps of the vectorised env)
    :param deterministic: greedy actions
    """

    def __init__(
        self,
        distill: RealTimeDistillCallback,
        eval_env: VecEnv,
        trial: optuna.Trial,
        n_eval_episodes: int = 5,
        eval_freq: int = 10_000,
        deterministic: bool = True,
    ) -> None:
        super().__init__()
        self.distill = distill
        self.eval_env = eval_env
        self.trial = trial
        self.n_eval_episodes = n_eval_episodes
        self.eval_freq = eval_freq
        self.deterministic = deterministic
        self.n_evaluations = 0
        self.last_mean_reward = -np.inf
        self.is_pruned = False

    def evaluate(self) -> float:
        """:return: the student's mean return, also reported to the trial."""
        sync_envs_normalization(self.training_env, self.eval_env)
        returns, _ = evaluate_policy(
            self.distill.student, self.eval_env, n_eval_episodes=self.n_eval_episodes, deterministic=self.deterministic
        )
        self.last_mean_reward = float(np.mean(returns))
        self.n_evaluations += 1
        self.logger.record("eval/student_mean_reward", self.last_mean_reward)
        self.trial.report(self.last_mean_reward, self.n_evaluations)
        return self.last_mean_reward

    def _on_training_start(self) -> None:
        self.total_timesteps = int(self.locals["total_timesteps"])  # learn()'s own arguments, as SB3 passes them

    def _on_step(self) -> bool:
        at_end = self.num_timesteps >= self.total_timesteps  # evaluated once distilled, in _on_training_end
        if self.n_calls % self.eval_freq == 0 and self.distill.n_distillations > 0 and not at_end:
            self.evaluate()
            if self.trial.should_prune():
                self.is_pruned = True
                return False
        return True

    def _on_training_end(self) -> None:
        if not self.is_pruned:
            self.evaluate()


class DistillTuningManager(ExperimentManager):
    """RL-Zoo's ``ExperimentManager`` whose Optuna objective is the student's return over distillation options."""

    def objective(self, trial: optuna.Trial) -> float:
        options = sample_distill_options(trial, self.algo)
        callbacks: list[BaseCallback] = []
        distill: RealTimeDistillCallback | None = None
        specs = self.specified_callbacks
        for spec in specs if isinstance(specs, list) else [specs]:
            if isinstance(spec, dict) and CALLBACK_NAME in spec:
                kwargs = spec[CALLBACK_NAME]
                if isinstance(kwargs.get("student"), dict):
                    raise ValueError("--tune student scores one student: give the entry a single student")
                distill = RealTimeDistillCallback(**{**kwargs, **options, "verbose": 0})
                callbacks.append(distill)
            else:
                callbacks.extend(get_callback_list({"callback": [spec]}))
        if distill is None:
            raise ValueError(f"--tune student needs {CALLBACK_NAME} in the entry's callback list")
        env = self.create_envs(self.n_envs, no_log=True)
        model = ALGOS[self.algo](
            env=env, tensorboard_log=None, seed=None, verbose=0, device=self.device, **self._hyperparams
        )
        eval_env = self.create_envs(n_envs=self.n_eval_envs, eval_env=True)
        n_evaluations = self.n_evaluations or 1
        eval_freq = max(self.n_timesteps // n_evaluations // self.n_envs, 1)
        student_eval = StudentTrialEvalCallback(
            distill, eval_env, trial, self.n_eval_episodes, eval_freq, deterministic=self.deterministic_eval
        )
        try:
            model.learn(self.n_timesteps, callback=[*callbacks, student_eval])
        except (AssertionError, ValueError) as error:  # as RL-Zoo does: a diverging trial is pruned
            print(f"Trial {trial.number} failed ({error}) with distillation options {options}")
            raise optuna.TrialPruned() from error
        finally:
            env.close()
            eval_env.close()
        if student_eval.is_pruned:
            raise optuna.TrialPruned()
        return student_eval.last_mean_reward
