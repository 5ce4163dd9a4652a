"""The ``sb3-distill`` command line (also ``python -m sb3_distill``).

- ``sb3-distill train --algo ppo --env PongNoFrameskip-v4 [--student ...] [any rl_zoo3.train option]``:
  RL-Zoo's training with this package's hyperparameter files, which distil a student in real time;
- ``sb3-distill distill -f logs --algo ppo --env Acrobot-v1 --student-kwargs net_arch:[8]``: offline
  distillation of a saved agent, found and wrapped as ``rl_zoo3.enjoy`` finds and wraps it;
- ``sb3-distill enjoy --student PATH --env ENV``: run a saved student with the teacher's wrappers;
- ``sb3-distill compare --teacher T.zip --student S.zip --env ENV``: returns, agreement, size, latency;
- ``sb3-distill list``: the games and algorithms the hyperparameter files cover, with each student's compression.

Everything that can be checked (algorithm, env id, student, options, the YAML itself) is checked
before RL-Zoo starts, and reported as one line naming the problem.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sb3_distill import zoo
from sb3_distill.agents import find_zoo_run
from sb3_distill.enjoy import play, student_env, teacher_wrappers

#: Errors that mean "bad input": reported in one line, exit status 2.
USER_ERRORS = (ValueError, TypeError, ImportError, FileNotFoundError, KeyError, OSError)


class CommandError(Exception):
    """A problem with the command line, reported without a traceback."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Report bad input found in the block (a missing file, an unknown env, a student that does not fit) as such."""
    try:
        yield
    except USER_ERRORS as error:
        raise CommandError(str(error)) from error


# -- option parsing ----------------------------------------------------------------------------


def parse_key_values(items: Sequence[str] | None, option: str) -> dict[str, Any]:
    """
    Parse ``KEY:VALUE`` pairs, each value read as YAML (``net_arch:[16]``, ``learning_rate:3e-4``).

    :param items: the pairs
    :param option: the option's name, for error messages
    :return: the options as a dict
    """
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition(":")
        if not sep or not key:
            raise CommandError(f"{option}: expected KEY:VALUE, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise CommandError(f"{option}: cannot read the value of {key!r}: {error}") from error
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        parsed[key] = value
    return parsed


def callback_options() -> list[str]:
    """:return: the options ``RealTimeDistillCallback`` takes."""
    from sb3_distill.realtime import RealTimeDistillCallback

    return [name for name in inspect.signature(RealTimeDistillCallback.__init__).parameters if name != "self"]


def override_distillation(
    entry: dict[str, Any],
    student: str | None,
    student_kwargs: dict[str, Any],
    distill_kwargs: dict[str, Any],
    where: str,
) -> dict[str, Any]:
    """
    A copy of a hyperparameter entry with the callback's options changed.

    ``student`` replaces the file's student and its ``student_kwargs`` (the new ones are
    ``student_kwargs``); ``student_kwargs`` alone are merged into the file's.

    :param entry: the entry, unchanged
    :param student: the new student (alias or dotted name), or ``None``
    :param student_kwargs: policy kwargs for the student
    :param distill_kwargs: other callback options (``learning_rate``, ``epochs``...)
    :param where: names the entry in error messages
    :return: the new entry
    """
    entry = copy.deepcopy(entry)
    kwargs = zoo.distill_kwargs(entry, where)
    known = callback_options()
    unknown = sorted(set(distill_kwargs) - set(known))
    if unknown:
        raise CommandError(f"--distill-kwargs: unknown option(s) {unknown}; RealTimeDistillCallback takes {known}")
    kwargs.update(distill_kwargs)
    if student is not None:
        kwargs["student"] = student
        kwargs["student_kwargs"] = dict(student_kwargs)
    elif student_kwargs:
        kwargs["student_kwargs"] = {**(kwargs.get("student_kwargs") or {}), **student_kwargs}
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise CommandError(f"{where}: unknown RealTimeDistillCallback option(s) {unknown}; it takes {known}")
    return entry


# -- train -------------------------------------------------------------------------------------


def _pop_option(rest: list[str], *names: str, nargs: str = "1") -> list[str] | None:
    """Remove an option of RL-Zoo's from ``rest`` and return its values (``None`` when absent)."""
    for index, token in enumerate(rest):
        name, sep, inline = token.partition("=")
        if name not in names:
            continue
        if sep:
            del rest[index]
            return [inline]
        end = index + 1
        if nargs == "1":
            end = min(index + 2, len(rest))
        else:
            while end < len(rest) and not rest[end].startswith("-"):
                end += 1
        values = rest[index + 1 : end]
        del rest[index:end]
        if not values:
            raise CommandError(f"{name} needs a value")
        return values
    return None


def prepare_train(args: argparse.Namespace, rest: list[str], folder: Path) -> list[str]:
    """
    Check everything about a ``train`` command and write the entry RL-Zoo will read.

    :param args: the parsed options
    :param rest: the options for RL-Zoo (changed in place)
    :param folder: where to write the derived hyperparameter file
    :return: the ``rl_zoo3.train`` command line
    """
    from sb3_distill.envs import require_env

    conf_file = _pop_option(rest, "--conf-file", "-conf", "--conf")
    packages = _pop_option(rest, "--gym-packages", nargs="+") or []
    default_file = zoo.hyperparams_file(args.algo)  # also checks the algorithm
    path = Path(conf_file[0]) if conf_file else default_file
    require_env(args.env)
    hyperparams = zoo.load_hyperparams(path)
    key = zoo.find_entry(hyperparams, args.env, where=str(path))
    where = f"{path}: {key}"
    entry = override_distillation(
        hyperparams[key],
        args.student,
        parse_key_values(args.student_kwargs, "--student-kwargs"),
        parse_key_values(args.distill_kwargs, "--distill-kwargs"),
        where,
    )
    if args.tune == "student":
        if not {"-optimize", "--optimize-hyperparameters"} & set(rest):
            raise CommandError("--tune student applies to RL-Zoo's Optuna search: add -optimize")
        if isinstance(zoo.distill_kwargs(entry, where)["student"], dict):
            raise CommandError(f"--tune student scores one student; {where} distils several")
    derived = folder / f"{args.algo}.yml"
    derived.write_text(yaml.safe_dump({args.env: entry}, sort_keys=False))
    report = zoo.check_entry(args.algo, args.env, config=derived)
    for name, share in report.compression.items():
        label = "" if name == "student" else f" {name!r}"
        print(
            f"sb3-distill: student{label} has {share:.2%} of the teacher's acting parameters "
            f"({report.student_parameters[name]:,} / {report.teacher_parameters:,}); entry {key!r} of {path}"
        )
    return [
        "rl_zoo3.train",
        "--algo",
        args.algo,
        "--env",
        args.env,
        "--conf-file",
        str(derived),
        "--gym-packages",
        "sb3_distill.envs",
        *packages,
        *rest,
    ]


def run_rl_zoo(argv: list[str], tune_student: bool = False) -> None:
    """
    Run ``rl_zoo3.train`` with this command line, as ``python -m rl_zoo3.train`` would.

    :param argv: the command line
    :param tune_student: RL-Zoo's ``-optimize`` tunes the distillation options for the student's
        return (:class:`~sb3_distill.tuning.DistillTuningManager` stands in for RL-Zoo's manager)

    RL-Zoo has no public extension point for either: ``rl_zoo3.train.train()`` reads ``sys.argv`` and names
    ``ExperimentManager`` itself. Both are swapped for the call and restored after it.
    """
    import rl_zoo3.train

    saved_argv, saved_manager = sys.argv, rl_zoo3.train.ExperimentManager
    sys.argv = argv
    if tune_student:
        from sb3_distill.tuning import DistillTuningManager

        rl_zoo3.train.ExperimentManager = DistillTuningManager  # type: ignore[misc]
    try:
        rl_zoo3.train.train()
    finally:
        sys.argv, rl_zoo3.train.ExperimentManager = saved_argv, saved_manager  # type: ignore[misc]


def train_command(args: argparse.Namespace, rest: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="sb3-distill-") as folder:
        with user_errors():
            argv = prepare_train(args, rest, Path(folder))
        run_rl_zoo(argv, tune_student=args.tune == "student")
    return 0


# -- enjoy -------------------------------------------------------------------------------------


def _teacher_wrappers(args: argparse.Namespace, path: Path, student: Any) -> tuple[dict[str, Any], str]:
    """The hyperparameters whose wrappers the teacher trained with; :return: them, and where they came from."""
    return teacher_wrappers(student, path, args.env, algo=args.algo, conf_file=args.conf_file)


def _enjoy_env(args: argparse.Namespace, path: Path) -> tuple[Any, Any, str]:
    """Load the student and build its environment; :return: student, env, where the wrappers came from."""
    from stable_baselines3.common.vec_env import VecVideoRecorder

    from sb3_distill.envs import require_env
    from sb3_distill.student_files import load_student

    require_env(args.env)
    student = load_student(path, name=args.name, device=args.device)
    hyperparams, source = _teacher_wrappers(args, path, student)
    env_kwargs = parse_key_values(args.env_kwargs, "--env-kwargs")
    if args.record_video:
        env_kwargs["render_mode"] = "rgb_array"
    elif args.render:
        env_kwargs["render_mode"] = "human"
    env = student_env(student, args.env, hyperparams, args.seed, env_kwargs)
    if args.record_video:
        env = VecVideoRecorder(
            env,
            args.record_video,
            record_video_trigger=lambda step: step == 0,
            video_length=args.n_timesteps or 1000,
            name_prefix=f"student-{args.env.replace('/', '-')}",
        )
    return student, env, source


def enjoy_command(args: argparse.Namespace, rest: list[str]) -> int:
    path = Path(args.student)
    if not path.is_file():
        raise CommandError(f"--student: no file {str(path)!r}")
    if args.n_episodes < 1 or (args.n_timesteps is not None and args.n_timesteps < 1):
        raise CommandError("--n-episodes and -n/--n-timesteps must be positive")
    with user_errors():
        student, env, source = _enjoy_env(args, path)
    print(f"sb3-distill: {path} on {args.env}, wrappers from {source}")
    try:
        returns, steps = play(student, env, args.n_episodes, args.n_timesteps, not args.stochastic)
    finally:
        env.close()
    if returns:
        print(
            f"{len(returns)} episode(s) in {steps} steps: return {np.mean(returns):.2f} +/- {np.std(returns):.2f} "
            f"(min {np.min(returns):.2f}, max {np.max(returns):.2f})"
        )
    else:
        print(f"no episode finished in {steps} steps")
    return 0


# -- distill -----------------------------------------------------------------------------------


def _teacher_argument(args: argparse.Namespace) -> Path:
    """The teacher a command names: ``--teacher PATH``, or RL-Zoo's ``-f FOLDER --algo ALGO --env ENV``."""
    if args.teacher is not None:
        return Path(args.teacher)
    if args.folder is None or args.algo is None or args.env is None:
        raise CommandError("name the teacher: --teacher ZIP_OR_RUN_FOLDER, or -f FOLDER --algo ALGO --env ENV")
    with user_errors():
        return find_zoo_run(args.folder, args.algo, args.env, args.exp_id)


def distill_options() -> list[str]:
    """:return: the options of :class:`~sb3_distill.offline.OfflineDistillation` that ``--distill-kwargs`` sets."""
    from sb3_distill.offline import OfflineDistillation

    fixed = {"self", "teacher", "student", "env", "collect", "student_kwargs", "student_algo", "seed", "device"}
    fixed |= {"verbose", "logger"}
    return [name for name in inspect.signature(OfflineDistillation.__init__).parameters if name not in fixed]


def distill_command(args: argparse.Namespace, rest: list[str]) -> int:
    from sb3_distill.offline import distill
    from sb3_distill.serialization import check_save_path
    from sb3_distill.student_files import save_student
    from sb3_distill.teachers import open_teacher, teacher_env

    teacher_path = _teacher_argument(args)
    options = parse_key_values(args.distill_kwargs, "--distill-kwargs")
    unknown = sorted(set(options) - set(distill_options()))
    if unknown:
        raise CommandError(f"--distill-kwargs: unknown option(s) {unknown}; distill takes {distill_options()}")
    with user_errors():
        model, agent = open_teacher(teacher_path, device=args.device)
        if args.output:
            output = Path(args.output)
        elif agent is not None and agent.config_folder is not None:
            output = agent.model_path.parent / f"{agent.model_path.stem}_student.zip"
        else:
            output = Path("student.zip")
        check_save_path(output)
        env = teacher_env(model, agent, None if args.env is None else args.env, seed=args.seed)
        student = distill(
            model,
            args.student,
            env,
            args.n_timesteps,
            collect=args.collect,
            student_kwargs=parse_key_values(args.student_kwargs, "--student-kwargs") or None,
            student_algo=args.student_algo,
            seed=args.seed,
            device=args.device,
            verbose=args.verbose,
            **options,
        )
        assert not isinstance(student, dict)
        save_student(student, output)
    env.close()
    print(f"written: {output}")
    return 0


# -- compare -----------------------------------------------------------------------------------


def compare_command(args: argparse.Namespace, rest: list[str]) -> int:
    from sb3_distill.envs import require_env
    from sb3_distill.evaluation import compare, format_comparison, plot_comparison
    from sb3_distill.serialization import atomic_write_bytes
    from sb3_distill.spaces import spaces_mismatch
    from sb3_distill.student_files import load_student
    from sb3_distill.teachers import open_teacher, teacher_env

    if args.n_eval_episodes < 1:
        raise CommandError("-n/--n-eval-episodes must be positive")
    teacher_path = _teacher_argument(args)
    with user_errors():
        teacher, agent = open_teacher(teacher_path, device="cpu")
        path = Path(args.student)
        if not path.is_file():
            raise FileNotFoundError(f"--student: no file {str(path)!r}")
        student = load_student(path, name=args.name, device="cpu")
        difference = spaces_mismatch(teacher.policy, student)
        if difference is not None:
            raise ValueError(f"{path} is not a student of this teacher: {difference}")
        for output in (args.json, args.plot):
            if output is not None and not Path(output).resolve().parent.is_dir():
                raise FileNotFoundError(f"no folder for {output!r}")
        if agent is not None and agent.env_id is not None and args.env in (None, agent.env_id):
            args.env = agent.env_id
            env, source = teacher_env(teacher, agent, None, seed=args.seed), "the RL-Zoo run's config.yml"
        elif args.env is None:
            raise ValueError(f"the environment of {str(teacher_path)!r} is unknown (not an RL-Zoo run): pass --env")
        else:
            require_env(args.env)
            hyperparams, source = _teacher_wrappers(args, path, student)
            env = student_env(student, args.env, hyperparams, args.seed)
    print(f"sb3-distill: {teacher_path} vs {path} on {args.env}, wrappers from {source}")
    try:
        results = compare(teacher, student, env, n_eval_episodes=args.n_eval_episodes, seed=args.seed)
    finally:
        env.close()
    results.update(teacher_file=str(teacher_path), student_file=str(path), env_id=args.env, seed=args.seed)
    print(format_comparison(results))
    atomic_write_bytes((json.dumps(results, indent=2) + "\n").encode(), args.json)
    print(f"written: {args.json}")
    if args.plot:
        with user_errors():
            plot_comparison(results, args.plot)
        print(f"written: {args.plot}")
    return 0


# -- export ------------------------------------------------------------------------------------


def export_command(args: argparse.Namespace, rest: list[str]) -> int:
    from sb3_distill.export import export

    student = Path(args.student)
    output = Path(args.output) if args.output else student.with_suffix(".onnx" if args.format == "onnx" else ".pt")
    with user_errors():
        if not student.is_file():
            raise FileNotFoundError(f"no student file {str(student)!r}")
        export(student, output, format=args.format, with_scores=args.with_scores, name=args.name)
    print(f"written: {output}")
    return 0


# -- list --------------------------------------------------------------------------------------


def list_command(args: argparse.Namespace, rest: list[str]) -> int:
    algos = [args.algo] if args.algo else list(zoo.ZOO_ALGOS)
    table: dict[str, dict[str, float]] = {}
    for algo in algos:
        for key, share in zoo.compressions(zoo.hyperparams_file(algo)).items():
            table.setdefault(key, {})[algo] = share
    width = max(len(key) for key in table) + 2
    print(
        "env".ljust(width)
        + "".join(algo.rjust(8) for algo in algos)
        + "   (student's share of the teacher's acting parameters)"
    )
    for key, shares in table.items():
        label = "atari (other games)" if key == zoo.ATARI_KEY else key
        cells = "".join((f"{shares[algo]:.2%}" if algo in shares else "-").rjust(8) for algo in algos)
        print(label.ljust(width) + cells)
    return 0


# -- entry point -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sb3-distill", description="Policy distillation for Stable-Baselines3.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train a teacher with RL-Zoo and distil a student in real time",
        description="RL-Zoo training (python -m rl_zoo3.train) with sb3-distill's hyperparameter files; "
        "options not listed here go to rl_zoo3.train (-n, --eval-freq, --save-freq, -tb, --seed, -optimize...).",
    )
    train.add_argument("--algo", default="ppo", help=f"teacher algorithm: {', '.join(zoo.ZOO_ALGOS)}")
    train.add_argument("--env", default="CartPole-v1", help="environment id")
    train.add_argument("--student", help="student policy: an alias (MlpPolicy, CnnPolicy) or a dotted class name")
    train.add_argument("--student-kwargs", nargs="+", metavar="KEY:VALUE", help="policy_kwargs of the student")
    train.add_argument(
        "--distill-kwargs", nargs="+", metavar="KEY:VALUE", help="RealTimeDistillCallback options (learning_rate:3e-4)"
    )
    train.add_argument(
        "--tune",
        choices=["teacher", "student"],
        default="teacher",
        help="with -optimize: what RL-Zoo's Optuna search tunes: the teacher's hyperparameters (RL-Zoo's "
        "default), or the distillation options, scored by the student's return",
    )
    train.set_defaults(func=train_command)

    distilling = commands.add_parser(
        "distill",
        help="distil a saved agent (an RL-Zoo run, published ones included) into a student, offline",
        description="Offline distillation (sb3_distill.distill) of a saved agent. Name it as rl_zoo3.enjoy does "
        "(-f FOLDER --algo ALGO --env ENV [--exp-id N]) or by --teacher ZIP_OR_RUN_FOLDER; the environment is "
        "built as rl_zoo3.enjoy builds it (wrappers, VecNormalize statistics) unless --env names another.",
    )
    distilling.add_argument("--teacher", help="the teacher's zip, or an RL-Zoo run folder")
    distilling.add_argument("-f", "--folder", help="RL-Zoo's log folder (with --algo and --env)")
    distilling.add_argument("--algo", help="the teacher's algorithm folder under -f (ppo, dqn...)")
    distilling.add_argument("--env", help="environment id (default: the RL-Zoo run's own)")
    distilling.add_argument("--exp-id", type=int, default=0, help="experiment id under -f (default 0: the latest)")
    distilling.add_argument("--student", default="MlpPolicy", help="student policy: an alias or a dotted class name")
    distilling.add_argument("--student-kwargs", nargs="+", metavar="KEY:VALUE", help="policy_kwargs of the student")
    distilling.add_argument(
        "--student-algo",
        help="the algorithm whose aliases --student names (ppo: an actor-critic student from any teacher, "
        "ready for to_ppo; default: the teacher's)",
    )
    distilling.add_argument("-n", "--n-timesteps", type=int, default=20_000, help="environment steps (default 20000)")
    distilling.add_argument("--collect", choices=["teacher", "student", "mixed"], default="student")
    distilling.add_argument(
        "--distill-kwargs", nargs="+", metavar="KEY:VALUE", help="more options of distill (learning_rate:1e-3)"
    )
    distilling.add_argument("-o", "--output", help="student file (default: beside the teacher, ENV_student.zip)")
    distilling.add_argument("--seed", type=int, default=0)
    distilling.add_argument("--device", default="cpu")
    distilling.add_argument("--verbose", type=int, default=0)
    distilling.set_defaults(func=distill_command)

    enjoy = commands.add_parser("enjoy", help="run a saved student and report its return")
    enjoy.add_argument("--student", required=True, help="student file (.zip)")
    enjoy.add_argument("--env", required=True, help="environment id")
    enjoy.add_argument("--algo", help="take the wrappers from this algorithm's hyperparameter file")
    enjoy.add_argument("--conf-file", help="take the wrappers from this hyperparameter file")
    enjoy.add_argument("--name", help="which student of a checkpoint holding several")
    enjoy.add_argument("--n-episodes", type=int, default=10, help="episodes to run (default 10)")
    enjoy.add_argument("-n", "--n-timesteps", type=int, help="stop after this many steps")
    enjoy.add_argument("--seed", type=int, default=0)
    enjoy.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the best")
    enjoy.add_argument("--render", action="store_true", help="show the environment (needs a display)")
    enjoy.add_argument("--record-video", metavar="FOLDER", help="record a video of the first steps into FOLDER")
    enjoy.add_argument("--env-kwargs", nargs="+", metavar="KEY:VALUE", help="keyword arguments of gym.make")
    enjoy.add_argument("--device", default="cpu")
    enjoy.set_defaults(func=enjoy_command)

    comparing = commands.add_parser(
        "compare", help="returns, agreement, size and latency of a student against its teacher"
    )
    comparing.add_argument("--teacher", help="the teacher's SB3 zip, or an RL-Zoo run folder")
    comparing.add_argument("-f", "--folder", help="RL-Zoo's log folder (with --algo and --env), instead of --teacher")
    comparing.add_argument("--exp-id", type=int, default=0, help="experiment id under -f (default 0: the latest)")
    comparing.add_argument("--student", required=True, help="student file (.zip)")
    comparing.add_argument("--env", help="environment id (default: the RL-Zoo run's own)")
    comparing.add_argument("-n", "--n-eval-episodes", type=int, default=30, help="episodes per policy (default 30)")
    comparing.add_argument("--algo", help="take the wrappers from this algorithm's hyperparameter file")
    comparing.add_argument("--conf-file", help="take the wrappers from this hyperparameter file")
    comparing.add_argument("--name", help="which student of a checkpoint holding several")
    comparing.add_argument("--seed", type=int, default=0)
    comparing.add_argument(
        "--json", default="comparison.json", help="where to write the results (default comparison.json)"
    )
    comparing.add_argument("--plot", metavar="PNG", help="also save a plot of the return distributions")
    comparing.set_defaults(func=compare_command)

    exporting = commands.add_parser(
        "export", help="write a student as an ONNX or TorchScript file that runs without SB3"
    )
    exporting.add_argument("student", help="student file or checkpoint (.zip)")
    exporting.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    exporting.add_argument("-o", "--output", help="the file to write (default: the student's name, .onnx or .pt)")
    exporting.add_argument("--with-scores", action="store_true", help="also output the action scores")
    exporting.add_argument("--name", help="which student of a checkpoint holding several")
    exporting.set_defaults(func=export_command)

    listing = commands.add_parser("list", help="the games and algorithms covered, with each student's compression")
    listing.add_argument("--algo", choices=zoo.ZOO_ALGOS)
    listing.set_defaults(func=list_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit status
    """
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "train" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    func: Callable[[argparse.Namespace, list[str]], int] = args.func
    try:
        return func(args, rest)
    except CommandError as error:
        print(f"sb3-distill {args.command}: error: {error}", file=sys.stderr)
        return 2
