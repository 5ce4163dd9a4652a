"""RL Baselines3 Zoo integration: this package's hyperparameter files, their checks, and RL-Zoo's run folder.

The files ``hyperparams/{a2c,dqn,ppo,qrdqn}.yml`` are RL-Zoo hyperparameter files: RL-Zoo's own tuned
entries for the teacher, plus :class:`~sb3_distill.RealTimeDistillCallback` in RL-Zoo's ``callback:``
syntax. ``python -m rl_zoo3.train --conf-file`` reads them as they are; this module finds an entry,
checks its shape, and builds its environment and student without training, for the command line
and for the tests that keep the files from rotting.

``rl_zoo3`` is imported only by the functions that need it.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from gymnasium import spaces

#: The algorithms that have a hyperparameter file.
ZOO_ALGOS = ("a2c", "dqn", "ppo", "qrdqn")
#: The callback entry in a file's ``callback:`` list.
CALLBACK_NAME = "sb3_distill.RealTimeDistillCallback"
#: RL-Zoo's shared entry for every Atari game without its own.
ATARI_KEY = "atari"
#: The comment on an entry's first line that records its student's compression.
_COMPRESSION_COMMENT = re.compile(r"^(?P<key>[^\s#][^:#]*):.*#\s*student:\s*(?P<percent>[0-9.]+)%")


def hyperparams_file(algo: str) -> Path:
    """
    :param algo: ``"a2c"``, ``"dqn"``, ``"ppo"`` or ``"qrdqn"``
    :return: the path of this package's hyperparameter file for ``algo``
    """
    if algo not in ZOO_ALGOS:
        close = difflib.get_close_matches(algo, ZOO_ALGOS, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ValueError(f"no hyperparameter file for algorithm {algo!r}{hint}: covered are {', '.join(ZOO_ALGOS)}")
    path = Path(str(resources.files("sb3_distill") / "hyperparams" / f"{algo}.yml"))
    if not path.is_file():
        raise FileNotFoundError(f"the hyperparameter file {path} is missing from the installed package")
    return path


def load_hyperparams(path: str | Path) -> dict[str, dict[str, Any]]:
    """
    Read an RL-Zoo hyperparameter file and check its shape.

    :param path: the YAML file
    :return: entry name (env id or ``"atari"``) -> hyperparameters
    """
    try:
        content = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(content, dict) or not content:
        raise ValueError(f"{path}: expected a mapping of env id -> hyperparameters, got {type(content).__name__}")
    for key, entry in content.items():
        where = f"{path}: {key}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping of hyperparameters, got {type(entry).__name__}")
        for required in ("policy", "n_timesteps"):
            if required not in entry:
                raise ValueError(f"{where}: missing the key {required!r}")
        distill_kwargs(entry, where)
    return content


def distill_kwargs(entry: Mapping[str, Any], where: str = "entry") -> dict[str, Any]:
    """
    The keyword arguments of the distillation callback in an entry's ``callback:`` list.

    :param entry: one entry of a hyperparameter file
    :param where: names the entry in error messages
    :return: the callback's kwargs (the ``student`` key is required)
    """
    callbacks = entry.get("callback")
    if callbacks is None:
        raise ValueError(f"{where}: no 'callback' key: add '- {CALLBACK_NAME}: {{student: ...}}' to it")
    if not isinstance(callbacks, list):
        callbacks = [callbacks]
    found = []
    for index, item in enumerate(callbacks):
        if isinstance(item, dict) and CALLBACK_NAME in item:
            if len(item) != 1:
                raise ValueError(f"{where}: callback[{index}] has several keys {sorted(item)}: check the indentation")
            found.append((index, item[CALLBACK_NAME]))
        elif item == CALLBACK_NAME:
            raise ValueError(f"{where}: callback[{index}]: {CALLBACK_NAME} needs its options (at least 'student')")
    if len(found) != 1:
        raise ValueError(f"{where}: expected one {CALLBACK_NAME} in 'callback', found {len(found)}")
    index, kwargs = found[0]
    key = f"{where}: callback[{index}].{CALLBACK_NAME}"
    if not isinstance(kwargs, dict):
        raise ValueError(f"{key}: expected a mapping of options, got {type(kwargs).__name__}")
    if "student" not in kwargs:
        raise ValueError(f"{key}: missing the key 'student'")
    if not isinstance(kwargs.get("student_kwargs") or {}, dict):
        raise ValueError(f"{key}.student_kwargs: expected a mapping, got {type(kwargs['student_kwargs']).__name__}")
    return kwargs


def is_atari(env_id: str) -> bool:
    """:return: whether ``env_id`` is a registered ALE game (after ``sb3_distill.envs`` registered them)."""
    import gymnasium as gym

    from sb3_distill.envs import register

    register()
    try:
        entry_point = str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        return False
    return "AtariEnv" in entry_point or entry_point.startswith("ale_py")


def find_entry(hyperparams: Mapping[str, dict[str, Any]], env_id: str, where: str = "hyperparameters") -> str:
    """
    The key of the entry that RL-Zoo uses for ``env_id``: its own, else ``"atari"`` for an Atari game.

    :param hyperparams: a loaded hyperparameter file
    :param env_id: the environment id
    :param where: names the file in error messages
    :return: the entry's key
    """
    if env_id in hyperparams:
        return env_id
    if ATARI_KEY in hyperparams and is_atari(env_id):
        return ATARI_KEY
    candidates = [key for key in hyperparams if key != ATARI_KEY]
    close = difflib.get_close_matches(env_id, candidates, n=3, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ValueError(f"{where} has no entry for {env_id!r}{hint} (see `sb3-distill list`)")


def compressions(path: str | Path) -> dict[str, float]:
    """
    The compression recorded next to each entry of a file (``# student: 1.70% ...`` on its first line).

    :param path: the YAML file
    :return: entry key -> compression (student / teacher acting parameters)
    """
    found = {}
    for line in Path(path).read_text().splitlines():
        match = _COMPRESSION_COMMENT.match(line)
        if match:
            found[match["key"].strip().strip("\"'")] = float(match["percent"]) / 100
    return found


@dataclass(frozen=True)
class EntryReport:
    """What :func:`check_entry` built: the spaces the teacher sees, and the parameter counts."""

    env_id: str
    entry: str
    observation_space: spaces.Space
    action_space: spaces.Space
    teacher_parameters: int
    student_parameters: dict[str, int]

    @property
    def compression(self) -> dict[str, float]:
        """Acting parameters of each student / the teacher's."""
        return {name: count / self.teacher_parameters for name, count in self.student_parameters.items()}


def check_entry(algo: str, env_id: str, config: str | Path | None = None, entry: str | None = None) -> EntryReport:
    """
    Build an entry's environment (with RL-Zoo's wrappers), its teacher policy and its students, without training.

    Goes through RL-Zoo's own ``ExperimentManager`` (reading, preprocessing, env creation), so a
    file that passes here is a file ``rl_zoo3.train`` runs. Only the teacher's *policy* is built
    (not the algorithm, whose replay buffer can be gigabytes).

    :param algo: ``"ppo"``, ``"a2c"``, ``"dqn"`` or ``"qrdqn"``
    :param env_id: the environment
    :param config: the hyperparameter file (default: this package's file for ``algo``)
    :param entry: the key to read (default: the one RL-Zoo picks for ``env_id``)
    :return: spaces and parameter counts
    """
    from rl_zoo3.utils import ALGOS

    from sb3_distill.outputs import count_acting_parameters
    from sb3_distill.realtime import RealTimeDistillCallback

    experiment = zoo_experiment(algo, env_id, config=config, entry=entry, n_envs=1)
    try:
        observation_space, action_space = experiment.env.observation_space, experiment.env.action_space
    finally:
        experiment.env.close()
    kwargs, callbacks, key = experiment.model_kwargs, experiment.callbacks, experiment.entry
    algo_class = ALGOS[algo]
    policy = kwargs["policy"]
    policy_class = algo_class.policy_aliases[policy] if isinstance(policy, str) else policy
    teacher = policy_class(observation_space, action_space, lambda _: 1e-4, **kwargs.get("policy_kwargs", {}))
    (callback,) = [c for c in callbacks if isinstance(c, RealTimeDistillCallback)]
    students = callback.make_students(
        observation_space, action_space, algo_class.policy_aliases, seed=0, teacher_policy=teacher
    )
    return EntryReport(
        env_id=env_id,
        entry=key,
        observation_space=observation_space,
        action_space=action_space,
        teacher_parameters=count_acting_parameters(teacher),
        student_parameters={name: count_acting_parameters(s) for name, s in students.items()},
    )


@dataclass
class ZooExperiment:
    """An entry as RL-Zoo prepares it: the model's keyword arguments, the callbacks and the wrapped environment."""

    #: the entry's key in the file
    entry: str
    #: keyword arguments of the algorithm (``policy`` included; schedules and ``policy_kwargs`` converted)
    model_kwargs: dict[str, Any]
    #: the callbacks of the entry's ``callback:`` list, built
    callbacks: list[Any]
    #: the environment with RL-Zoo's wrappers (and SB3's image transposition), seeded
    env: Any
    #: the entry's number of environments and its budget
    n_envs: int
    n_timesteps: int


def zoo_experiment(
    algo: str,
    env_id: str,
    config: str | Path | None = None,
    entry: str | None = None,
    n_envs: int | None = None,
    seed: int = 0,
    vec_env_type: str = "dummy",
) -> ZooExperiment:
    """
    Prepare an entry exactly as ``rl_zoo3.train`` would (reading, preprocessing, wrapped env), without training.

    :param algo: ``"ppo"``, ``"a2c"``, ``"dqn"`` or ``"qrdqn"``
    :param env_id: the environment
    :param config: the hyperparameter file (default: this package's file for ``algo``)
    :param entry: the key to read (default: the one RL-Zoo picks for ``env_id``)
    :param n_envs: environments to create (default: the entry's ``n_envs``)
    :param seed: the environments' seed
    :param vec_env_type: ``"dummy"`` or ``"subproc"`` (RL-Zoo's ``--vec-env``: environments stepped in
        subprocesses, the same settings; a script using it needs ``if __name__ == "__main__":``)
    :return: the prepared experiment; close its ``env`` when done
    """
    from rl_zoo3.exp_manager import ExperimentManager

    from sb3_distill.agents import transpose_images
    from sb3_distill.envs import require_env
    from sb3_distill.internals import preprocess_zoo_hyperparams

    if vec_env_type not in ("dummy", "subproc"):
        raise ValueError(f"vec_env_type must be 'dummy' or 'subproc', not {vec_env_type!r}")
    require_env(env_id)
    path = Path(config) if config is not None else hyperparams_file(algo)
    hyperparams = load_hyperparams(path)
    key = entry if entry is not None else find_entry(hyperparams, env_id, where=str(path))
    with tempfile.TemporaryDirectory() as folder:
        single = Path(folder) / "entry.yml"
        single.write_text(yaml.safe_dump({env_id: hyperparams[key]}))
        manager = ExperimentManager(
            argparse.Namespace(),
            algo,
            env_id,
            log_folder=folder,
            config=str(single),
            verbose=0,
            seed=seed,
            vec_env_type=vec_env_type,
        )
        with contextlib.redirect_stdout(io.StringIO()):  # RL-Zoo prints the hyperparameters it reads
            raw, _ = manager.read_hyperparameters()
            kwargs, manager.env_wrapper, callbacks, manager.vec_env_wrapper = preprocess_zoo_hyperparams(manager, raw)
            env = manager.create_envs(n_envs or manager.n_envs, no_log=True)
    env = transpose_images(env)  # the VecTransposeImage SB3 adds for images
    return ZooExperiment(key, kwargs, callbacks, env, int(manager.n_envs), int(manager.n_timesteps))


def teacher_settings(algo: str, env_id: str, config: str | Path | None = None) -> tuple[int, dict[str, Any]]:
    """
    A teacher's settings from a hyperparameter file, as RL-Zoo converts them (schedules, ``policy_kwargs``).

    The one source of the tuned settings that examples, benchmarks and tests train teachers with.

    :param algo: ``"ppo"``, ``"a2c"``, ``"dqn"`` or ``"qrdqn"``
    :param env_id: the environment
    :param config: the hyperparameter file (default: this package's file for ``algo``)
    :return: the entry's ``n_envs``, and the algorithm's keyword arguments (``policy`` included)
    """
    experiment = zoo_experiment(algo, env_id, config=config, n_envs=1)
    experiment.env.close()
    return experiment.n_envs, dict(experiment.model_kwargs)
