"""Running a saved student, as ``rl_zoo3.enjoy`` runs a saved agent: its environment, its episodes.

The environment is the teacher's (the RL-Zoo entry's wrappers, frame stack, image transposition) with the
``VecNormalize`` statistics the student recorded; the wrappers come from the RL-Zoo run the student was saved
in, or else from a hyperparameter file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv

from sb3_distill import zoo
from sb3_distill.agents import make_zoo_env
from sb3_distill.normalization import wrap_env
from sb3_distill.spaces import spaces_mismatch


def saved_run_config(student_path: Path, env_id: str) -> dict[str, Any] | None:
    """
    The hyperparameters RL-Zoo saved for the run a student was saved in (``RUN/ENV/config.yml``), if it was.

    :param student_path: the student's file
    :param env_id: the environment
    :return: the hyperparameters, or ``None``
    """
    from rl_zoo3.utils import get_saved_hyperparams

    params_path = student_path.parent / env_id.replace("/", "-")
    if not (params_path / "config.yml").is_file():
        return None
    hyperparams, _ = get_saved_hyperparams(str(params_path), norm_reward=False, test_mode=True)
    return hyperparams


def family_algo(student: BasePolicy) -> str:
    """:return: the RL-Zoo algorithm whose hyperparameter file fits a student's policy family"""
    from sb3_contrib.qrdqn.policies import QRDQNPolicy
    from stable_baselines3.dqn.policies import DQNPolicy

    if isinstance(student, QRDQNPolicy):
        return "qrdqn"
    return "dqn" if isinstance(student, DQNPolicy) else "ppo"


def teacher_wrappers(
    student: BasePolicy, student_path: Path, env_id: str, algo: str | None = None, conf_file: str | None = None
) -> tuple[dict[str, Any], str]:
    """
    The hyperparameters whose wrappers the student's teacher trained with.

    :param student: the loaded student
    :param student_path: its file (an RL-Zoo run's ``config.yml`` beside it is used first)
    :param env_id: the environment
    :param algo: take the entry from this algorithm's hyperparameter file instead
    :param conf_file: take the entry from this hyperparameter file instead
    :return: the hyperparameters, and where they came from (for the user)
    """
    hyperparams = None if conf_file or algo else saved_run_config(student_path, env_id)
    if hyperparams is not None:
        return hyperparams, "the RL-Zoo run's saved config.yml"
    conf = Path(conf_file) if conf_file else zoo.hyperparams_file(algo or family_algo(student))
    entries = zoo.load_hyperparams(conf)
    key = zoo.find_entry(entries, env_id, where=str(conf))
    return entries[key], f"entry {key!r} of {conf}"


def student_env(
    student: BasePolicy,
    env_id: str,
    hyperparams: dict[str, Any],
    seed: int,
    env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """
    The environment a student acts in: the teacher's wrappers, then the student's recorded normalisation.

    :param student: the loaded student
    :param env_id: the environment
    :param hyperparams: the entry (or saved RL-Zoo config) whose wrappers the teacher trained with
    :param seed: the environment's seed
    :param env_kwargs: keyword arguments of ``gym.make``
    :return: the environment, checked against the student's spaces
    """
    env = make_zoo_env(env_id, hyperparams, seed=seed, env_kwargs=env_kwargs, normalize=lambda v: wrap_env(v, student))
    difference = spaces_mismatch(student, env)
    if difference is not None:
        env.close()
        raise ValueError(
            f"{env_id} with the teacher's wrappers differs from the student in its {difference}: is it the "
            f"student of another environment?"
        )
    return env


def play(
    student: BasePolicy, env: VecEnv, n_episodes: int, n_timesteps: int | None, deterministic: bool
) -> tuple[list[float], int]:
    """
    Run a student until ``n_episodes`` episodes end or ``n_timesteps`` steps pass.

    ``evaluate_policy(..., return_episode_rewards=True)`` counts episodes only; a video or a long Atari game
    needs the step bound too. Returns are the full-game returns ``Monitor`` records (under Atari's life-loss
    resets), as ``evaluate_policy`` reports them.

    :param student: the student
    :param env: its environment
    :param n_episodes: episodes to finish
    :param n_timesteps: steps at most (``None``: no bound)
    :param deterministic: greedy actions
    :return: the episodes' returns and the number of steps taken
    """
    returns: list[float] = []
    obs = env.reset()
    steps = 0
    while len(returns) < n_episodes and (n_timesteps is None or steps < n_timesteps):
        actions, _ = student.predict(obs, deterministic=deterministic)  # type: ignore[arg-type]
        obs, _, _, infos = env.step(actions)
        steps += 1
        returns.extend(float(info["episode"]["r"]) for info in infos if "episode" in info)
    return returns, steps
