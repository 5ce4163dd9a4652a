"""Register the environments the hyperparameter files use: ALE's Atari games and MinAtar's.

Import it for its side effect, as RL-Zoo does with ``--gym-packages sb3_distill.envs``
(the ``sb3-distill`` command imports it itself). Packages that are not installed are skipped;
:func:`require_env` then says which one to install.
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym

#: Environment id prefix -> the package that provides it, for error messages.
PROVIDERS = {"MinAtar/": "minatar", "ALE/": "ale-py"}


#: The longest MinAtar episode, in steps (MinAtar registers its games without one). In Seaquest a submarine that
#: never dives lives for ever (50,000 steps of action 0 end nothing), so a greedy policy that stays at the surface
#: (an early teacher, a small student) made every evaluation of it, ``evaluate_policy`` and RL-Zoo's
#: ``EvalCallback`` alike, loop for ever. 27,000 steps is ALE v5's cap (108,000 frames, 4 per step); three PPO
#: Asterix teachers (returns 7-10) end theirs within 702. ``gym.registry[env_id].max_episode_steps = None``, after
#: import, lifts it.
MINATAR_MAX_EPISODE_STEPS = 27_000

#: the MinAtar ids already given their cap (once each: a cap lifted afterwards stays lifted)
_CAPPED: set[str] = set()


def register() -> None:
    """
    Register ALE's games (``PongNoFrameskip-v4``) and MinAtar's (``MinAtar/Breakout-v1``), where installed.

    MinAtar's games get an episode cap (:data:`MINATAR_MAX_EPISODE_STEPS`, where their registration has none):
    ``gym.make`` then adds ``TimeLimit`` under SB3's ``Monitor``, so that a truncated episode counts as one.
    """
    if importlib.util.find_spec("ale_py") is not None:
        import ale_py

        gym.register_envs(ale_py)
    if importlib.util.find_spec("minatar") is not None:
        if "MinAtar/Breakout-v1" not in gym.registry:
            from minatar import gym as minatar_gym

            minatar_gym.register_envs()
        for env_id, spec in gym.registry.items():
            if env_id.startswith("MinAtar/") and env_id not in _CAPPED:
                _CAPPED.add(env_id)
                if spec.max_episode_steps is None:
                    spec.max_episode_steps = MINATAR_MAX_EPISODE_STEPS


def require_env(env_id: str) -> None:
    """
    Check that ``env_id`` is registered, naming the package to install or the close matches if not.

    :param env_id: the environment id
    """
    import difflib

    register()
    if env_id in gym.registry:
        return
    for prefix, package in PROVIDERS.items():
        if env_id.startswith(prefix) and importlib.util.find_spec(package.replace("-", "_")) is None:
            raise ValueError(f"environment {env_id!r} needs the {package!r} package: pip install {package}")
    if env_id.endswith("NoFrameskip-v4") and importlib.util.find_spec("ale_py") is None:
        raise ValueError(f"Atari environment {env_id!r} needs ale-py: pip install 'sb3-distill[atari]'")
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ValueError(f"environment {env_id!r} is not registered{hint}")


register()
