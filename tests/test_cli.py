"""The command line and RL-Zoo's own ``train``: end to end for a few hundred steps, and the early errors."""

from __future__ import annotations

import glob
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from sb3_distill import load_student, zoo
from sb3_distill.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
SB3_DISTILL = str(pathlib.Path(sys.executable).parent / "sb3-distill")  # the installed console script

#: (algo, env, RL-Zoo options): a few hundred teacher steps, the teacher updating within them. SB3's
#: off-policy algorithms write their logs when episodes end: the first Pong game (seed 0) ends at step 846.
CASES = {
    "ppo-pong": ("ppo", "PongNoFrameskip-v4", ["-n", "1024", "--hyperparams", "n_envs:4", "n_steps:64"]),
    "dqn-pong": (
        "dqn",
        "PongNoFrameskip-v4",
        ["-n", "1000", "--log-interval", "1", "--hyperparams", "learning_starts:500", "buffer_size:2000"],
    ),
    "ppo-minatar": ("ppo", "MinAtar/Breakout-v1", ["-n", "2048"]),
}


def run(command: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def tensorboard_scalars(folder: pathlib.Path) -> dict[str, int]:
    """How many values each tag has in the TensorBoard events under ``folder``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (events,) = glob.glob(str(folder / "**" / "events.out.tfevents.*"), recursive=True)
    counts: dict[str, int] = {}
    for event in EventFileLoader(events).Load():
        for value in event.summary.value:
            counts[value.tag] = counts.get(value.tag, 0) + 1
    return counts


#: Both entry points on every case; RL-Zoo's own on Pong (the same code path as ours, 30 s each) and ours on DQN
#: Pong (24 s; DQN's real-time path is tested in test_realtime, the CLI's Atari path with PPO) run in `make bench`.
TOOL_CASES = [
    pytest.param(tool, case, marks=pytest.mark.slow)
    if "pong" in case and (tool == "rl_zoo3.train" or case == "dqn-pong")
    else (tool, case)
    for case in CASES
    for tool in ("rl_zoo3.train", "sb3-distill train")
]


@pytest.mark.parametrize(("tool", "case"), TOOL_CASES)
def test_train_distils_and_saves_the_student_next_to_the_teacher(tool, case, tmp_path):
    algo, env_id, options = CASES[case]
    common = ["--algo", algo, "--env", env_id, "--seed", "0", "--num-threads", "1", "-f", "logs", "-tb", "tb"]
    common += ["--eval-freq", "-1", "--save-freq", "512", *options]
    conf = zoo.hyperparams_file(algo)
    entries = zoo.load_hyperparams(conf)
    finishes = zoo.distill_kwargs(entries[zoo.find_entry(entries, env_id)]).get("finish_steps", 0) > 0
    if tool == "rl_zoo3.train":
        if finishes:  # the file as it is but for a short finish (the entry's takes a minute and a half)
            text = conf.read_text()
            conf = tmp_path / conf.name
            conf.write_text(text.replace("finish_steps: 100000", "finish_steps: 512"))
        command = [sys.executable, "-m", "rl_zoo3.train", "--conf-file", str(conf)]
        command += ["--gym-packages", "sb3_distill.envs"]
    else:
        command = [SB3_DISTILL, "train", *(["--distill-kwargs", "finish_steps:512"] if finishes else [])]
    result = run([*command, *common], cwd=tmp_path)
    assert ("Finished the students on their own states: 512 steps each" in result.stdout) == finishes

    name = env_id.replace("/", "-")  # RL-Zoo's file names
    run_folder = tmp_path / "logs" / algo / f"{name}_1"
    assert (run_folder / f"{name}.zip").is_file()  # RL-Zoo's model
    assert list(run_folder.glob("rl_model_*_steps.zip"))  # --save-freq still works
    student_file = run_folder / f"{name}_student.zip"
    student = load_student(student_file, device="cpu")
    if env_id.startswith("MinAtar"):
        assert student.observation_space.shape == (10, 10, 4)
    else:
        assert student.observation_space.shape == (4, 84, 84)
    # TensorBoard (-tb) received the distillation metrics next to the teacher's.
    scalars = tensorboard_scalars(tmp_path / "tb")
    assert scalars.get("distill/loss", 0) >= 1
    assert "distill/agreement" in scalars
    assert "distill/compression" in scalars

    enjoy = run([SB3_DISTILL, "enjoy", "--student", str(student_file), "--env", env_id, "-n", "50"], cwd=tmp_path)
    assert "wrappers from the RL-Zoo run's saved config.yml" in enjoy.stdout
    assert "steps" in enjoy.stdout.splitlines()[-1]


def test_enjoy_reports_returns_with_the_package_wrappers(tmp_path, capsys):
    assert (
        main(["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "800", "-f", str(tmp_path), "--eval-freq", "-1"])
        == 0
    )
    student_file = tmp_path / "a2c" / "CartPole-v1_1" / "CartPole-v1_student.zip"
    moved = tmp_path / "elsewhere.zip"  # outside its run folder: wrappers come from the package's files
    moved.write_bytes(student_file.read_bytes())
    capsys.readouterr()
    assert main(["enjoy", "--student", str(moved), "--env", "CartPole-v1", "--n-episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "entry 'CartPole-v1' of" in out
    assert "3 episode(s) in" in out


def test_list_names_every_game_and_compression(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for game in ("PongNoFrameskip-v4", "ZaxxonNoFrameskip-v4", "MinAtar/Seaquest-v1", "MountainCar-v0"):
        assert game in out
    pong = next(line for line in out.splitlines() if line.startswith("PongNoFrameskip-v4"))
    assert pong.split()[1:] == ["1.69%", "1.69%", "1.69%", "1.52%"]  # a2c dqn ppo qrdqn


def test_python_dash_m_runs_the_command(tmp_path):
    result = run([sys.executable, "-m", "sb3_distill", "list", "--algo", "dqn"], cwd=tmp_path)
    assert "MinAtar/Breakout-v1" in result.stdout


def broken_file(tmp_path: pathlib.Path) -> str:
    content = yaml.safe_load(zoo.hyperparams_file("ppo").read_text())
    del content["CartPole-v1"]["callback"][0][zoo.CALLBACK_NAME]["student"]
    path = tmp_path / "edited.yml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--algo", "ppo2"], r"no hyperparameter file for algorithm 'ppo2' \(did you mean ppo\?\)"),
        (["--env", "CartPole-v0"], r"no entry for 'CartPole-v0'.*close matches: CartPole-v1"),
        (["--env", "CartPol-v1"], r"'CartPol-v1' is not registered; close matches: CartPole-v1"),
        (["--student", "sb3_distill.students.NoSuchNet"], r"student 'sb3_distill.students.NoSuchNet' does not import"),
        (["--student-kwargs", "net_arch:[16]", "features_dim:7"], r"cannot build student .*features_dim"),
        (["--student-kwargs", "net_arch"], r"--student-kwargs: expected KEY:VALUE, got 'net_arch'"),
        (["--distill-kwargs", "lr:1e-3"], r"unknown option\(s\) \['lr'\]"),
        (["--distill-kwargs", "epochs:0"], r"epochs must be > 0, got 0"),
        (
            ["--conf-file", "BROKEN"],
            r"CartPole-v1: callback\[0\]\.sb3_distill\.RealTimeDistillCallback: missing the key 'student'",
        ),
    ],
)
def test_bad_input_fails_before_training_with_a_clear_message(options, message, tmp_path, capsys):
    options = [broken_file(tmp_path) if option == "BROKEN" else option for option in options]
    args = ["train", "--env", "CartPole-v1", "-f", str(tmp_path / "logs"), "-n", "256", *options]
    if "--env" in options:
        args.remove("CartPole-v1")
        args.remove("--env")
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("sb3-distill train: error: ")
    assert "Traceback" not in error
    assert re.search(message, error), error
    assert not (tmp_path / "logs").exists()  # RL-Zoo never started


def test_enjoy_rejects_a_student_of_another_environment(tmp_path, capsys):
    assert main(["train", "--env", "CartPole-v1", "-n", "512", "-f", str(tmp_path), "--eval-freq", "-1"]) == 0
    student_file = tmp_path / "ppo" / "CartPole-v1_1" / "CartPole-v1_student.zip"
    assert main(["enjoy", "--student", str(student_file), "--env", "Acrobot-v1", "--algo", "ppo"]) == 2
    assert "is it the student of another environment?" in capsys.readouterr().err
    assert main(["enjoy", "--student", str(tmp_path / "missing.zip"), "--env", "CartPole-v1"]) == 2
    assert "--student: no file" in capsys.readouterr().err


def test_rl_zoo_optuna_search_runs_with_the_callback(tmp_path):
    """RL-Zoo's --optimize: each trial builds the callback from the YAML; trials are not runs, nothing is saved."""
    conf = str(zoo.hyperparams_file("ppo"))
    result = run(
        [
            *[sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "CartPole-v1", "--conf-file", conf],
            *["-optimize", "--n-trials", "2", "-n", "1024", "--n-evaluations", "1", "--sampler", "random"],
            *["--pruner", "none", "--no-optim-plots", "--num-threads", "1", "-f", "logs", "--seed", "0"],
        ],
        cwd=tmp_path,
    )
    assert result.stdout.count("Distilling PPO into 'student'") == 2  # the callback ran in both trials
    assert re.search(r"Number of finished trials:\s+2", result.stdout), result.stdout[-2000:]
    assert not list(tmp_path.rglob("*_student.zip"))


def test_tune_student_searches_distillation_options_in_a_shared_study(tmp_path):
    """-optimize --tune student: the student's return is the objective; two runs on one storage share the study."""
    import optuna

    storage = tmp_path / "study.log"  # RL-Zoo's journal-file storage; an SQL URL works the same across machines
    command = [SB3_DISTILL, "train", "--algo", "ppo", "--env", "CartPole-v1", "-n", "2048", "-optimize"]
    command += ["--tune", "student", "--n-trials", "2", "--n-evaluations", "2", "--sampler", "random"]
    command += ["--pruner", "none", "--no-optim-plots", "--num-threads", "1", "--eval-episodes", "2"]
    command += ["--storage", str(storage), "--study-name", "distill", "-f", "logs"]
    for machine in ("first", "second"):
        folder = tmp_path / machine
        folder.mkdir()
        run(command, cwd=folder)

    study = optuna.load_study(
        study_name="distill",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage))),
    )
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 4
    for trial in trials:
        assert set(trial.params) == {"distill_learning_rate", "distill_epochs", "distill_batch_size"}
        assert sorted(trial.intermediate_values) == [1, 2]  # reported for the pruner, then at the end


def test_tune_student_needs_optuna_search(capsys):
    assert main(["train", "--env", "CartPole-v1", "--tune", "student"]) == 2
    assert "--tune student applies to RL-Zoo's Optuna search: add -optimize" in capsys.readouterr().err


def test_finish_under_rl_zoo_runs_on_one_more_environment_of_the_run(tmp_path):
    """``--distill-kwargs finish_steps:N``: no environment to give; the teacher is the one trained without it."""
    import torch as th
    from stable_baselines3 import PPO

    saved = {}
    for name, extra in (("plain", []), ("finished", ["--distill-kwargs", "finish_steps:1000"])):
        folder = tmp_path / name
        args = ["train", "--env", "CartPole-v1", "-n", "1024", "-f", str(folder), "--eval-freq", "-1", "--seed", "0"]
        assert main([*args, *extra]) == 0
        run_folder = folder / "ppo" / "CartPole-v1_1"
        teacher = PPO.load(run_folder / "CartPole-v1.zip", device="cpu")
        student = load_student(run_folder / "CartPole-v1_student.zip")
        saved[name] = [th.nn.utils.parameters_to_vector(p.parameters()) for p in (teacher.policy, student)]
    assert th.equal(saved["plain"][0], saved["finished"][0])  # the teacher trained as without the finish
    assert not th.equal(saved["plain"][1], saved["finished"][1])  # the student was finished
