"""The RL-Zoo hyperparameter files: every entry builds its environment and student, and the files ship in the wheel."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

import pytest
import yaml

from sb3_distill import zoo
from sb3_distill.zoo_runs import current_zoo_run

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: Rusu et al. (2015), then the Proximal Policy Distillation benchmarks.
ATARI_GAMES = [
    "BeamRider",
    "Breakout",
    "Enduro",
    "Freeway",
    "MsPacman",
    "Pong",
    "Qbert",
    "Riverraid",
    "Seaquest",
    "SpaceInvaders",
    "Atlantis",
    "CrazyClimber",
    "DemonAttack",
    "Zaxxon",
]
MINATAR_GAMES = ["Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"]
CLASSIC = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"]
EXPECTED_ENTRIES = [
    "atari",
    *(f"{game}NoFrameskip-v4" for game in ATARI_GAMES),
    *(f"MinAtar/{game}-v1" for game in MINATAR_GAMES),
    *CLASSIC,
]
#: Continuous actions: the algorithms with Gaussian teachers.
CONTINUOUS = {"ppo": ["Pendulum-v1"], "a2c": ["Pendulum-v1"], "dqn": [], "qrdqn": []}


@pytest.mark.parametrize("algo", zoo.ZOO_ALGOS)
def test_every_entry_builds_its_env_and_student_with_the_recorded_compression(algo):
    path = zoo.hyperparams_file(algo)
    hyperparams = zoo.load_hyperparams(path)
    assert list(hyperparams) == EXPECTED_ENTRIES + CONTINUOUS[algo]
    recorded = zoo.compressions(path)
    assert set(recorded) == set(hyperparams), "every entry records its student's compression"
    for key in hyperparams:
        env_id = "PongNoFrameskip-v4" if key == zoo.ATARI_KEY else key
        report = zoo.check_entry(algo, env_id, entry=key)
        (compression,) = report.compression.values()
        # The comment gives two decimals of a percentage.
        assert compression == pytest.approx(recorded[key], abs=5e-5), key
        if key.endswith("NoFrameskip-v4") or key == zoo.ATARI_KEY:
            assert report.observation_space.shape == (4, 84, 84), key  # AtariWrapper + 4-frame stack, channel-first
            # About the real-time paper's 1.7% (QR-DQN's quantile head makes its teachers larger).
            assert (0.016 if algo != "qrdqn" else 0.0095) < compression < 0.018, key
        if key.startswith("MinAtar/"):
            assert report.observation_space.shape[:2] == (10, 10), key


@pytest.mark.parametrize("algo", zoo.ZOO_ALGOS)
def test_teacher_settings_are_rl_zoo_own(algo):
    """Each file starts from RL-Zoo's tuned entries: the teacher's training is theirs, plus the callback."""
    ours = zoo.load_hyperparams(zoo.hyperparams_file(algo))
    theirs = yaml.safe_load((pathlib.Path(zoo_package_dir()) / "hyperparams" / f"{algo}.yml").read_text())
    for key in ["atari", *CLASSIC, *CONTINUOUS[algo]]:
        entry = {name: value for name, value in ours[key].items() if name != "callback"}
        assert entry == theirs[key], key
    for game in ATARI_GAMES:
        assert ours[f"{game}NoFrameskip-v4"] == ours["atari"]


def zoo_package_dir() -> str:
    import rl_zoo3

    return str(pathlib.Path(rl_zoo3.__file__).parent)


def test_files_ship_in_the_wheel_with_the_command(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sb3_distill-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for algo in zoo.ZOO_ALGOS:
            shipped = archive.read(f"sb3_distill/hyperparams/{algo}.yml")
            assert shipped == (ROOT / "hyperparams" / f"{algo}.yml").read_bytes()
        (entry_points,) = [name for name in archive.namelist() if name.endswith("entry_points.txt")]
        assert "sb3-distill = sb3_distill.cli:main" in archive.read(entry_points).decode()


def test_find_entry_falls_back_to_the_atari_block_and_names_close_matches():
    hyperparams = zoo.load_hyperparams(zoo.hyperparams_file("ppo"))
    assert zoo.find_entry(hyperparams, "PongNoFrameskip-v4") == "PongNoFrameskip-v4"
    assert zoo.find_entry(hyperparams, "AlienNoFrameskip-v4") == "atari"  # any other Atari game
    with pytest.raises(ValueError, match=r"no entry for 'CartPole-v0'.*close matches: CartPole-v1"):
        zoo.find_entry(hyperparams, "CartPole-v0")
    with pytest.raises(ValueError, match=r"no hyperparameter file for algorithm 'ppo2' \(did you mean ppo\?\)"):
        zoo.hyperparams_file("ppo2")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update({"CartPole-v1": [1, 2]}), r"CartPole-v1: expected a mapping of hyperparameters"),
        (lambda d: d["CartPole-v1"].pop("policy"), r"CartPole-v1: missing the key 'policy'"),
        (lambda d: d["CartPole-v1"].pop("callback"), r"CartPole-v1: no 'callback' key"),
        (
            lambda d: d["CartPole-v1"]["callback"][0][zoo.CALLBACK_NAME].pop("student"),
            r"CartPole-v1: callback\[0\]\.sb3_distill\.RealTimeDistillCallback: missing the key 'student'",
        ),
        (
            lambda d: d["CartPole-v1"]["callback"][0][zoo.CALLBACK_NAME].update(student_kwargs=[16]),
            r"CartPole-v1: callback\[0\]\.sb3_distill\.RealTimeDistillCallback\.student_kwargs: expected a mapping",
        ),
        (
            lambda d: d["CartPole-v1"]["callback"][0].update(other=1),
            r"CartPole-v1: callback\[0\] has several keys .* check the indentation",
        ),
    ],
)
def test_an_edited_file_in_an_invalid_shape_names_the_key(tmp_path, edit, message):
    content = yaml.safe_load(zoo.hyperparams_file("ppo").read_text())
    edit(content)
    broken = tmp_path / "ppo.yml"
    broken.write_text(yaml.safe_dump(content))
    with pytest.raises(ValueError, match=message):
        zoo.load_hyperparams(broken)


def test_outside_rl_zoo_there_is_no_run():
    assert current_zoo_run() is None


def test_zoo_experiment_steps_environments_in_subprocesses_when_asked():
    from stable_baselines3.common.vec_env import SubprocVecEnv

    experiment = zoo.zoo_experiment("ppo", "CartPole-v1", n_envs=2, vec_env_type="subproc")
    try:
        assert isinstance(experiment.env, SubprocVecEnv)
        assert experiment.env.reset().shape == (2, 4)
    finally:
        experiment.env.close()


def test_zoo_experiment_refuses_an_unknown_vec_env_type():
    with pytest.raises(ValueError, match="vec_env_type must be 'dummy' or 'subproc', not 'threads'"):
        zoo.zoo_experiment("ppo", "CartPole-v1", vec_env_type="threads")
