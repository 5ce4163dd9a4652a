"""Saved agents as SB3 and RL Baselines3 Zoo write them, and the environment they act in.

One place for everything a file on disk needs before it can teach:

- agents saved by older SB3 with ``gym`` (RL-Zoo's published agents): their pickles name ``gym.spaces``;
  while they load, those names resolve to gymnasium's (:func:`legacy_gym_pickles`), and their lambdas
  saved by older Pythons are replaced as RL-Zoo's ``enjoy`` replaces them (:data:`LEGACY_CUSTOM_OBJECTS`);
- RL-Zoo's run layout (:class:`SavedAgent`): ``RUN/ENV.zip`` beside ``RUN/ENV/config.yml``, ``args.yml``
  and, for agents trained under ``VecNormalize``, ``vecnormalize.pkl``;
- the environment built as ``rl_zoo3.enjoy`` builds it (:meth:`SavedAgent.make_env`: the entry's
  wrappers, ``VecNormalize`` statistics frozen, frame stack, image transposition).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import pickle
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecNormalize, VecTransposeImage

#: ``gym`` modules that old pickles name, and the gymnasium modules that hold the same classes.
LEGACY_GYM_MODULES = {
    "gym": "gymnasium",
    "gym.spaces": "gymnasium.spaces",
    **{f"gym.spaces.{name}": f"gymnasium.spaces.{name}" for name in ("box", "discrete", "multi_discrete")},
    **{f"gym.spaces.{name}": f"gymnasium.spaces.{name}" for name in ("multi_binary", "dict", "tuple", "space")},
    "gym.spaces.utils": "gymnasium.spaces.utils",
}

#: What RL-Zoo's ``enjoy`` passes as ``custom_objects``: schedules pickled by older Pythons do not load,
#: and a teacher never trains, so they are replaced by constants.
LEGACY_CUSTOM_OBJECTS: dict[str, Any] = {
    "learning_rate": 0.0,
    "lr_schedule": lambda _: 0.0,
    "clip_range": lambda _: 0.0,
    "exploration_schedule": lambda _: 0.0,
}

#: RL-Zoo's run folders end in ``_<experiment id>``.
_RUN_SUFFIX = re.compile(r"_\d+$")


@contextlib.contextmanager
def legacy_gym_pickles() -> Iterator[None]:
    """
    While the block runs, pickles that name ``gym.spaces.*`` load as gymnasium's spaces.

    Does nothing when ``gym`` itself is installed (SB3 then converts its spaces on load). The aliases
    are removed afterwards, so ``import gym`` elsewhere still fails as it should.
    """
    if importlib.util.find_spec("gym") is not None:
        yield
        return
    added = [name for name in LEGACY_GYM_MODULES if name not in sys.modules]
    for name in added:
        sys.modules[name] = importlib.import_module(LEGACY_GYM_MODULES[name])
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _env_file_name(env_id: str) -> str:
    """The name RL-Zoo gives files of ``env_id`` (``ALE/Pong-v5`` -> ``ALE-Pong-v5``)."""
    return env_id.replace("/", "-")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    with open(path) as file:
        # RL-Zoo writes OrderedDicts with python tags: its own enjoy reads them with the UnsafeLoader.
        content = yaml.load(file, Loader=yaml.UnsafeLoader)
    return dict(content or {})


@dataclass(frozen=True)
class SavedAgent:
    """
    The files of a saved agent: its zip and, in RL-Zoo's layout, the folder of its settings.

    :param model_path: the SB3 zip
    :param env_id: the environment it was trained on, where known (RL-Zoo's ``args.yml``, or the zip's name
        in RL-Zoo's layout)
    :param config_folder: RL-Zoo's ``ENV/`` folder beside the zip (``config.yml``, ``args.yml``), if any
    :param vecnormalize_path: the ``VecNormalize`` statistics saved with it, if any
    """

    model_path: Path
    env_id: str | None = None
    config_folder: Path | None = None
    vecnormalize_path: Path | None = None

    @classmethod
    def find(cls, path: str | os.PathLike[str]) -> SavedAgent:
        """
        The agent at ``path``: an SB3 zip, or an RL-Zoo run folder (``logs/ppo/Acrobot-v1_1``).

        :param path: the zip or the folder
        :return: where its files are
        """
        path = Path(path)
        if path.is_dir():
            return cls._find_in_run_folder(path)
        if not path.is_file():
            if path.suffix != ".zip" and path.with_name(path.name + ".zip").is_file():
                return cls.find(path.with_name(path.name + ".zip"))
            raise FileNotFoundError(
                f"teacher {str(path)!r} does not exist (expected an SB3 zip or an RL-Zoo run folder)"
            )
        config_folder = path.parent / path.stem
        if not (config_folder / "config.yml").is_file():
            config_folder = None  # type: ignore[assignment]
        env_id = None
        if config_folder is not None:
            args_file = config_folder / "args.yml"
            env_id = str(_read_yaml(args_file).get("env") or "") if args_file.is_file() else ""
            env_id = env_id or path.stem
        stats = [folder / "vecnormalize.pkl" for folder in (config_folder, path.parent) if folder is not None]
        vecnormalize_path = next((candidate for candidate in stats if candidate.is_file()), None)
        return cls(path, env_id, config_folder, vecnormalize_path)

    @classmethod
    def _find_in_run_folder(cls, folder: Path) -> SavedAgent:
        args_files = sorted(folder.glob("*/args.yml"))
        env_ids = [str(_read_yaml(args).get("env") or "") for args in args_files]
        candidates = [env_id for env_id in env_ids if env_id] or [_RUN_SUFFIX.sub("", folder.name)]
        for env_id in candidates:
            model_path = folder / f"{_env_file_name(env_id)}.zip"
            if model_path.is_file():
                return cls.find(model_path)
        zips = sorted(p.name for p in folder.glob("*.zip"))
        raise FileNotFoundError(
            f"{str(folder)!r} is not an RL-Zoo run folder: expected {candidates[0]!r}'s model "
            f"{_env_file_name(candidates[0])}.zip in it (found {zips or 'no zip'}); pass the zip itself"
        )

    @property
    def hyperparams(self) -> dict[str, Any]:
        """The entry RL-Zoo trained with (``config.yml``), empty when there is none."""
        if self.config_folder is None:
            return {}
        return _read_yaml(self.config_folder / "config.yml")

    @property
    def normalized(self) -> bool:
        """Whether the agent acts on ``VecNormalize``'d observations (its statistics, or its config, say so)."""
        return self.vecnormalize_path is not None or bool(self.hyperparams.get("normalize", False))

    def env_kwargs(self) -> dict[str, Any]:
        """``gym.make`` keyword arguments as RL-Zoo's ``enjoy`` reads them (``config.yml``, then ``args.yml``)."""
        kwargs = dict(self.hyperparams.get("env_kwargs") or {})
        args_file = None if self.config_folder is None else self.config_folder / "args.yml"
        if args_file is not None and args_file.is_file():
            kwargs.update(_read_yaml(args_file).get("env_kwargs") or {})
        return kwargs

    def make_env(self, seed: int | None = 0, n_envs: int = 1, env_kwargs: dict[str, Any] | None = None) -> VecEnv:
        """
        The agent's environment as ``rl_zoo3.enjoy`` builds it.

        The entry's ``env_wrapper`` and ``vec_env_wrapper``, its ``VecNormalize`` statistics frozen
        (``training=False``, rewards raw), ``frame_stack``, and SB3's image transposition.

        :param seed: the environments' seed
        :param n_envs: how many environments
        :param env_kwargs: more ``gym.make`` keyword arguments
        :return: the vectorised environment
        """
        from sb3_distill.envs import require_env

        if self.env_id is None:
            raise ValueError(
                f"{str(self.model_path)!r} is not in an RL-Zoo run folder (no {self.model_path.stem}/config.yml "
                f"beside it), so its environment is unknown: pass env"
            )
        if self.normalized and self.vecnormalize_path is None:
            raise FileNotFoundError(
                f"{self.config_folder}/config.yml says the agent was trained under VecNormalize, but "
                f"vecnormalize.pkl is missing: the teacher cannot act without its statistics"
            )
        require_env(self.env_id)
        vecnormalize_path = self.vecnormalize_path
        return make_zoo_env(
            self.env_id,
            self.hyperparams,
            seed=seed if seed is not None else 0,
            n_envs=n_envs,
            env_kwargs={**self.env_kwargs(), **(env_kwargs or {})},
            normalize=None if vecnormalize_path is None else lambda venv: load_vec_normalize(vecnormalize_path, venv),
        )


def make_zoo_env(
    env_id: str,
    hyperparams: dict[str, Any],
    seed: int = 0,
    n_envs: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    normalize: Callable[[VecEnv], VecEnv] | None = None,
) -> VecEnv:
    """
    An environment wrapped in RL-Zoo's order: ``env_wrapper`` (in each env), ``vec_env_wrapper``, normalisation,
    ``frame_stack``, then SB3's image transposition.

    :param env_id: the environment
    :param hyperparams: the entry (or a run's saved ``config.yml``) whose wrappers to apply
    :param seed: the environments' seed
    :param n_envs: how many environments
    :param env_kwargs: ``gym.make`` keyword arguments
    :param normalize: wraps the environment in its observation statistics (``VecNormalize``), if any
    :return: the vectorised environment
    """
    from rl_zoo3.utils import create_test_env

    wrappers: dict[str, Any] = {
        key: hyperparams[key] for key in ("env_wrapper", "vec_env_wrapper") if key in hyperparams
    }
    with contextlib.redirect_stdout(io.StringIO()):  # RL-Zoo prints what it wraps
        env = create_test_env(
            env_id, n_envs=n_envs, seed=seed, should_render=False, hyperparams=wrappers, env_kwargs=env_kwargs or {}
        )
    if normalize is not None:
        env = normalize(env)
    frame_stack = int(hyperparams.get("frame_stack", 0) or 0)
    if frame_stack:
        env = VecFrameStack(env, frame_stack)
    return transpose_images(env)


def read_vec_normalize(path: str | os.PathLike[str]) -> VecNormalize:
    """
    The ``VecNormalize`` statistics saved at ``path`` (``VecNormalize.save``), without an environment.

    :param path: the ``vecnormalize.pkl`` file
    :return: the wrapper, not yet wrapping anything (``set_venv`` it, or read its ``obs_rms``)
    """
    try:
        with open(path, "rb") as file, legacy_gym_pickles():
            vec_normalize = pickle.load(file)
    except (pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not VecNormalize statistics saved by SB3: {error}") from error
    if not isinstance(vec_normalize, VecNormalize):
        raise ValueError(f"{str(path)!r} holds a {type(vec_normalize).__name__}, not VecNormalize statistics")
    return vec_normalize


def load_vec_normalize(path: str | os.PathLike[str], venv: VecEnv) -> VecNormalize:
    """
    ``VecNormalize.load`` for evaluation: the statistics frozen, rewards raw, the spaces ``venv``'s own.

    :param path: the ``vecnormalize.pkl`` file (saved by any SB3, ``gym`` or gymnasium)
    :param venv: the environment to wrap (before frame stacking, as RL-Zoo does)
    :return: the wrapped environment
    """
    vec_normalize = read_vec_normalize(path)
    try:
        vec_normalize.set_venv(venv)
    except AssertionError as error:
        raise ValueError(
            f"the VecNormalize statistics {str(path)!r} are for observations of shape "
            f"{vec_normalize.observation_space.shape}, the environment gives {venv.observation_space.shape}: "
            f"normalisation wraps the environment before frame stacking, as RL-Zoo does"
        ) from error
    # What a VecNormalize built on venv holds (old pickles hold gym-era spaces).
    vec_normalize.observation_space, vec_normalize.action_space = venv.observation_space, venv.action_space
    vec_normalize.training = False
    vec_normalize.norm_reward = False
    return vec_normalize


def transpose_images(venv: VecEnv) -> VecEnv:
    """:return: ``venv`` with SB3's ``VecTransposeImage`` when it gives channel-last images, as SB3 wraps it."""
    space = venv.observation_space
    if is_image_space(space) and not is_image_space_channels_first(space):  # type: ignore[arg-type]
        return VecTransposeImage(venv)
    return venv


def as_vec_env(env: VecEnv | gym.Env | str, seed: int | None = None) -> VecEnv:
    """
    A ``VecEnv`` as SB3's algorithms wrap their ``env`` argument (a gym id is made with ``make_vec_env``).

    :param env: a ``VecEnv``, a ``gym.Env`` or a registered id
    :param seed: seed of an environment made here
    :return: the vectorised environment, images channel-first
    """
    if isinstance(env, str):
        from sb3_distill.envs import require_env

        require_env(env)
        env = make_vec_env(env, n_envs=1, seed=seed)
    elif isinstance(env, gym.Env):
        single = env
        env = DummyVecEnv([lambda: Monitor(single)])
    elif not isinstance(env, VecEnv):
        raise TypeError(f"env must be a VecEnv, a gym.Env or a registered id, got {type(env).__name__}")
    return transpose_images(env)


def find_zoo_run(folder: str | os.PathLike[str], algo: str, env_id: str, exp_id: int = 0) -> Path:
    """
    The run folder ``rl_zoo3.enjoy`` reads: ``FOLDER/ALGO/ENV_EXPID`` (``exp_id=0``: the latest run).

    :param folder: RL-Zoo's log folder (``-f``)
    :param algo: the algorithm's folder name
    :param env_id: the environment id
    :param exp_id: the experiment id
    :return: the run folder
    """
    from rl_zoo3.utils import get_latest_run_id

    env_name = _env_file_name(env_id)
    algo_folder = Path(folder) / algo
    if exp_id == 0:
        exp_id = get_latest_run_id(str(algo_folder), env_name)
        if exp_id == 0:
            raise FileNotFoundError(f"no run of {env_id} under {str(algo_folder)!r} (expected {env_name}_1, ...)")
    run = algo_folder / f"{env_name}_{exp_id}"
    if not run.is_dir():
        raise FileNotFoundError(f"no RL-Zoo run folder {str(run)!r}")
    return run
