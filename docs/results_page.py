"""Builds the results page from ``benchmarks/results/``: the committed JSON files, their tables and plots."""

from __future__ import annotations

import json
import pathlib
import re
import statistics
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _provenance(record: dict[str, Any]) -> str:
    machine = record.get("machine", {})
    where = machine.get("gpu") or f"{machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} cores"
    note = f" ({record['note']})" if record.get("note") else ""  # what the commit alone does not say
    torch = record.get("versions", {}).get("torch", "?")
    return f"commit `{record.get('commit', '?')[:12]}`{note}, {where}, torch {torch}"


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def students_section(name: str, title: str) -> list[str]:
    record = _load(name)
    if record is None:
        return []
    lines = [
        f"## {title}",
        "",
        f"`benchmarks/results/{name}.json` ({_provenance(record)}; seeds {record['seeds']}).",
        "",
    ]
    lines += [*(RESULTS / f"{name}.md").read_text().splitlines(), ""]
    for plot in record.get("plots", []):
        lines += [f"![{plot}](../benchmarks/results/{plot})", ""]
    return lines


#: the ladder's rungs, smallest first
RUNGS = ("1.7pct", "5pct", "25pct")

#: The compression targets the ladders are judged by: (rung names that count, median normalised return).
LADDER_TARGETS = {
    "at most 5%: 0.95": (("1.7pct", "5pct"), 0.95),
    "1.7%: 0.90": (("1.7pct",), 0.90),
}

#: the fewest teachers (runs) a task needs before an end step's medians stand in for its default ones
END_STEP_MIN_RUNS = 3


def _ladder_runs(end_steps: bool = False) -> dict[tuple[str, str, int], list[tuple[str, dict[str, Any]]]]:
    """
    Every full-size ladder run (not ``--quick``), by (algo, environment, teacher steps): (file stem, run). A file
    that lists others under ``supersedes`` re-ran their seeds with later code on the same teachers: its runs
    replace theirs (one teacher counts once). A teacher trained again (same seed, CPU model and return: bit for
    bit the same) also counts once: a run that made an end step (``--catch-up``, ``--finish``) is kept, since
    it holds the default scores as well, the smallest end step first (the one ``hyperparams/`` ships), then a run
    that scored its policies on the same episodes (``eval_seed``), else the first file: the choice is fixed rather
    than left to the order of file names.

    :param end_steps: keep one run per teacher and end step instead (a teacher run with a 100k and a 300k finish
        counts in each), for the end steps' own sections
    """
    records = {}
    for path in sorted(RESULTS.glob("students_vs_teacher*.json")):
        record = json.loads(path.read_text())
        if record.get("size") != "quick" and path.stem != "students_vs_teacher_quick":
            records[path.stem] = record
    superseded = {stem for record in records.values() for stem in record.get("supersedes", [])}
    cases: dict[tuple[str, str, int], list[tuple[str, dict[str, Any]]]] = {}
    for stem, record in records.items():
        if stem in superseded:
            continue
        for result in record["results"].values():
            for run in result["runs"]:
                run = {**run, "cpu": records[stem].get("machine", {}).get("cpu")}
                cases.setdefault((run["algo"], run["env"], run["teacher_steps"]), []).append((stem, run))
    for case, found in cases.items():
        kept: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
        for stem, run in found:
            teacher = _teacher_key(run)
            if end_steps:
                teacher += (run.get("catch_up") or 0, run.get("finish") or 0)
            if teacher not in kept or _preference(run) < _preference(kept[teacher][1]):
                kept[teacher] = (stem, run)
        cases[case] = list(kept.values())
    return cases


def _teacher_key(run: dict[str, Any]) -> tuple[Any, ...]:
    """
    One teacher, however many runs trained it: seed, CPU model (``_ladder_runs`` copies it from the file's machine)
    and return. On one CPU model a seed gives the same teacher bit for bit, so the same return means the same teacher.
    """
    return (run["seed"], run["cpu"], run["teacher_return"])


def _preference(run: dict[str, Any]) -> tuple[bool, int, int, bool]:
    """
    Which run of a teacher trained again counts for it (the smallest first): with an end step, the smallest; then
    one that scored every policy on the same episodes (it records ``eval_seed``; its changes are paired).
    """
    return (not _end_step(run), run.get("catch_up") or 0, run.get("finish") or 0, run.get("eval_seed") is None)


def _end_step(run: dict[str, Any]) -> bool:
    """Whether the run made a catch-up or a finish when training ended."""
    return bool(run.get("catch_up") or run.get("finish"))


def _default_scores(run: dict[str, Any], rung: str) -> dict[str, Any]:
    """A rung's scores with the default options: before the catch-up and the finish when the run made them."""
    student = run["students"][rung]
    return student.get("before_catch_up", student.get("before_finish", student))


def _final_scores(run: dict[str, Any], rung: str) -> dict[str, Any]:
    """A rung's scores at the end of the run: after the catch-up and the finish when the run made them."""
    return run["students"][rung]


def _median_normalized(runs: list[dict[str, Any]], rung: str, final: bool = False) -> float | None:
    scores = [(_final_scores if final else _default_scores)(run, rung)["normalized"] for run in runs]
    values = [value for value in scores if value is not None]
    return statistics.median(values) if values else None


def _wilcoxon_p(differences: list[float]) -> float | None:
    """
    The exact two-sided p-value of Wilcoxon's signed-rank test: zero differences dropped, tied magnitudes given
    their mean rank (the null distribution enumerated over doubled ranks, so ties stay exact).

    :return: ``None`` when no difference is left
    """
    nonzero = sorted((d for d in differences if d != 0), key=abs)
    if not nonzero:
        return None
    doubled: list[int] = []  # twice each magnitude's mean rank: an integer
    start = 0
    while start < len(nonzero):
        end = start
        while end + 1 < len(nonzero) and abs(nonzero[end + 1]) == abs(nonzero[start]):
            end += 1
        doubled += [start + end + 2] * (end - start + 1)
        start = end + 1
    positive = sum(rank for rank, d in zip(doubled, nonzero, strict=True) if d > 0)
    counts = {0: 1}  # doubled rank sum of the positive signs -> number of the 2^n sign patterns
    for rank in doubled:
        shifted = {total + rank: count for total, count in counts.items()}
        counts = {total: counts.get(total, 0) + shifted.get(total, 0) for total in counts.keys() | shifted.keys()}
    mean = sum(doubled) / 2
    extreme = sum(count for total, count in counts.items() if abs(total - mean) >= abs(positive - mean))
    return min(1.0, extreme / 2 ** len(doubled))


def ladder_summary_section() -> list[str]:
    """One row per (algo, environment, teacher steps), the seeds of every file merged; the targets counted."""
    cases = _ladder_runs()
    if not cases:
        return []
    lines = [
        "## Ladders across seeds (every `students_vs_teacher*.json` but `--quick`)",
        "",
        "Random-normalised student / teacher return, median over the seeds (each seed's own teacher), the runs of",
        "one algorithm, environment and teacher budget merged from every file (hyperparameters of the commit",
        "each file records; a seed run again, on another machine, is another teacher and counts as another run).",
        "Agreement: greedy, on the teacher's trajectories, the range over rungs and runs.",
        "Default options: a run made with `--catch-up` or `--finish` counts its students before them (see below).",
        "",
        "| algo | environment | teacher steps | runs | teacher return (each run) | 1.7% | 5% | 25% | agreement "
        "| files |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (algo, env_id, steps), found in sorted(cases.items()):
        runs = [run for _, run in found]
        rungs = [_fmt(_median_normalized(runs, rung), ".2f") for rung in RUNGS]
        agreement = [_default_scores(run, rung)["agreement"] for run in runs for rung in run["students"]]
        teachers = " / ".join(f"{run['teacher_return']:.1f}" for run in runs)
        files = ", ".join(sorted({f"`{stem}`" for stem, _ in found}))
        lines.append(
            f"| {algo} | {env_id} | {steps // 1000}k | {len(runs)} | {teachers} | {' | '.join(rungs)} | "
            f"{min(agreement):.2f} to {max(agreement):.2f} | {files} |"
        )
    lines += ["", *_ladder_targets(cases), ""]
    return lines


def _count(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural where it is not one."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _chosen_budgets(cases: dict[tuple[str, str, int], list[tuple[str, dict[str, Any]]]], algo: str) -> dict[str, int]:
    """Each environment of ``algo`` at the teacher budget with the most seeds (then the most steps)."""
    chosen: dict[str, tuple[int, int]] = {}
    for case_algo, env_id, steps in cases:
        if case_algo == algo:
            chosen[env_id] = max(chosen.get(env_id, (0, 0)), (len(cases[algo, env_id, steps]), steps))
    return {env_id: steps for env_id, (_, steps) in chosen.items()}


def _reaches(runs: list[dict[str, Any]], final: bool, rungs: tuple[str, ...], bar: float) -> bool:
    """Whether some rung of ``rungs`` has a median over ``runs`` at ``bar`` or above."""
    medians = [_median_normalized(runs, rung, final) for rung in rungs]
    return any(value is not None and value >= bar for value in medians)


def _reaches_without_any_one(runs: list[dict[str, Any]], final: bool, rungs: tuple[str, ...], bar: float) -> bool:
    """Whether :func:`_reaches` holds whichever one of ``runs`` is left out."""
    return all(_reaches(runs[:index] + runs[index + 1 :], final, rungs, bar) for index in range(len(runs)))


def _verdicts(tasks: dict[str, tuple[list[dict[str, Any]], bool]]) -> str:
    """
    Per target, the tasks that reach it, from each task's runs (``True``: scored after the end steps). A median of a
    few teachers can rest on one: the tasks that fall below the bar when some one run is left out are named.
    """
    verdicts = []
    for target, (rungs, bar) in LADDER_TARGETS.items():
        reached = [env_id for env_id, (runs, final) in sorted(tasks.items()) if _reaches(runs, final, rungs, bar)]
        fragile = [env_id for env_id in reached if not _reaches_without_any_one(*tasks[env_id], rungs, bar)]
        verdict = f"{target} on {len(reached)} of {len(tasks)} ({', '.join(reached) or 'none'})"
        if fragile:
            verdict += f", {len(reached) - len(fragile)} with any one run left out (not {', '.join(fragile)})"
        verdicts.append(verdict)
    return "; ".join(verdicts)


def _ladder_targets(cases: dict[tuple[str, str, int], list[tuple[str, dict[str, Any]]]]) -> list[str]:
    """Per algorithm, the tasks that reach each target, each task at its budget with the most seeds."""
    lines = []
    for algo in sorted({algo for algo, _, _ in cases}):
        chosen = _chosen_budgets(cases, algo)
        tasks = {env_id: ([run for _, run in cases[algo, env_id, steps]], False) for env_id, steps in chosen.items()}
        budgets = ", ".join(
            f"{env_id} {steps // 1000}k x {len(cases[algo, env_id, steps])} runs"
            for env_id, steps in sorted(chosen.items())
        )
        lines.append(f"- {algo.upper()} ({budgets}): {_verdicts(tasks)}.")
    return lines


def overhead_section() -> list[str]:
    lines: list[str] = []
    for name in sorted(path.stem for path in RESULTS.glob("overhead*.json")):
        record = _load(name)
        if record is None:
            continue
        lines += [f"## Overhead (`{name}.json`)", "", f"{_provenance(record)}; {record['repeats']} repeats.", ""]
        lines += [
            "| teacher | variant | median wall-time ratio (with / without) | median accounted ratio "
            "| median CPU-time ratio |"
        ]
        lines.append("|---|---|---|---|---|")
        for case, result in record["cases"].items():
            medians, accounted = result["median_ratio"], result.get("median_accounted_ratio")
            cpu = result.get("median_cpu_ratio") or {}
            if not isinstance(medians, dict):
                medians, accounted = {"one": medians}, {"one": accounted}
                cpu = {"one": result.get("median_cpu_time_ratio")}
            for variant, value in medians.items():
                lines.append(
                    f"| {case} | {variant} | {_fmt(value)} | {_fmt((accounted or {}).get(variant))} "
                    f"| {_fmt(cpu.get(variant))} |"
                )
        lines.append("")
    return lines


def packing_section() -> list[str]:
    """``packing.py``: one fit of a ladder, its students packed and one by one."""
    record = _load("packing")
    if record is None:
        return []
    lines = [
        "## Packed students (`packing.json`)",
        "",
        f"{_provenance(record)}; median CPU time of one fit over the same labelled observations, packed and one",
        f"by one alternated {record['alternations']} times (`benchmarks/packing.py`).",
        "",
        "| teacher | observations | packed (ms) | one by one (ms) | packed / one by one |",
        "|---|---|---|---|---|",
    ]
    for case, result in record["cases"].items():
        medians = result["median_cpu_seconds"]
        lines.append(
            f"| {case} | {result['observations']} | {medians['packed'] * 1e3:.1f} | "
            f"{medians['one_by_one'] * 1e3:.1f} | {result['ratio']:.3f} |"
        )
    return [*lines, ""]


def _averaging_note(record: dict[str, Any]) -> str:
    """The sentence naming ``--averaging``'s arms, when the run had them."""
    half_lives = record.get("averaging_half_lives")
    if not half_lives:
        return ""
    return (
        " `<arm>@ema<half-life>`: an exponential moving average of that student's weights over the run "
        f"(half-lives {', '.join(f'{h // 1000}k' for h in half_lives)} teacher steps), never trained itself."
    )


def student_architectures_section() -> list[str]:
    """``student_architectures.py``: MinAtar students of one budget, side by side on the same teachers."""
    lines: list[str] = []
    for name in sorted(path.stem for path in RESULTS.glob("student_architectures*.json")):
        record = _load(name)
        if record is None:
            continue
        lines += [
            f"## Student architectures at one budget (`{name}.json`)",
            "",
            f"{_provenance(record)}; {record['env']}, {record.get('algo', 'ppo').upper()} teachers of "
            f"{record['timesteps'] // 1000}k steps, "
            f"seeds {record['seeds']}, {record['eval_episodes']} episodes; every architecture a student of the "
            f"same callback, sized to the ladder's {record['ratio']:.1%} rung. Random-normalised return per seed."
            + _averaging_note(record),
            "",
            "| architecture | acting parameters | "
            + " | ".join(f"seed {r['seed']}" for r in record["runs"])
            + " | median | median difference to plain | median agreement |",
            "|---|---|" + "---|" * len(record["runs"]) + "---|---|---|",
        ]
        for arm, summary in record["summary"].items():
            per_seed = " | ".join(_fmt(r["students"][arm]["normalized"]) for r in record["runs"])
            parameters = sorted({r["students"][arm]["acting_parameters"] for r in record["runs"]})
            lines.append(
                f"| {arm} | {', '.join(map(str, parameters))} | {per_seed} | {_fmt(summary.get('median_normalized'))} "
                f"| {_fmt(summary.get('median_difference_to_plain'))} | {_fmt(summary['median_agreement'])} |"
            )
        teachers = ", ".join(f"{r['teacher_return']:.1f}" for r in record["runs"])
        lines += ["", f"Teachers' returns: {teachers}.", ""]
    return lines


def datafree_section() -> list[str]:
    lines: list[str] = []
    names = sorted(path.stem for path in RESULTS.glob("datafree*.json") if not path.stem.startswith("datafree_q_"))
    for name in names:
        record = _load(name)
        if record is None:
            continue
        lines += [
            f"## Simulator-free against offline teacher-driven (`{name}.json`)",
            "",
            f"{_provenance(record)}; seeds {record['seeds']}; {record['student_updates']} student updates each.",
            "",
            "| environment | mode | median return ratio | median normalised return | median agreement |",
            "|---|---|---|---|---|",
        ]
        for env_id, result in record["results"].items():
            for mode in ("datafree", "offline_teacher_driven"):
                normalized = result.get("median_normalized", {}).get(mode)
                agreement = result.get("median_agreement", {}).get(mode)
                ratio = result["median_ratio"].get(mode)
                lines.append(f"| {env_id} | {mode} | {_fmt(ratio)} | {_fmt(normalized)} | {_fmt(agreement)} |")
        lines.append("")
    return lines


def datafree_q_values_section() -> list[str]:
    lines: list[str] = []
    for path in sorted(RESULTS.glob("datafree_q_values*.json")):
        record = _load(path.stem)
        assert record is not None
        settings = record["settings"]
        teachers = settings.get("teachers") or [settings["teacher"]]
        lines += [
            f"## Simulator-free with a Q-value teacher (`{path.name}`)",
            "",
            f"{_provenance(record)}; teachers {', '.join(f'`{t}`' for t in teachers)}, {settings['iterations']} "
            "iterations; `uniform` replaces the generator by uniform samples from the same box.",
            "",
        ]
        for teacher, reference in record.get("references", {}).items():
            lines.append(
                f"- `{teacher}`: teacher {reference['teacher_return']:.1f}, random {reference['random_return']:.1f}"
            )
        lines += ["", "| teacher | mode | seed | student return | normalised | median abs. observation in the memory |"]
        lines.append("|---|---|---|---|---|---|")
        for run in record["runs"]:
            where = ", ".join(f"{value:.2f}" for value in run["memory_median_abs_obs"])
            normalized = _fmt(run.get("normalized"), ".2f")
            teacher = run.get("teacher", teachers[0])
            lines.append(
                f"| {teacher} | {run['mode']} | {run['seed']} | {run['return']:.1f} | {normalized} | {where} |"
            )
        lines.append("")
    return lines


def continuous_section() -> list[str]:
    lines: list[str] = []
    for path in sorted(RESULTS.glob("continuous*.json")):
        record = _load(path.stem)
        assert record is not None
        summary, settings = record["summary"], record["settings"]
        algo = summary.get("teacher_algo", "SAC")
        lines += [
            f"## A {algo} Pendulum teacher: KL against MSE, by budget (`{path.name}`)",
            "",
            f"{_provenance(record)}; seeds {settings['seeds']}; student {record['student']} "
            f"({summary['student_share']:.1%} of the teacher's actor); teacher {summary['teacher_return']:.1f}, "
            f"random {summary['random_return']:.1f}. Median random-normalised return by budget:",
            "",
            "| loss | steps | median | per seed |",
            "|---|---|---|---|",
        ]
        for key, value in summary.items():
            if isinstance(value, dict):
                loss, steps = key.split()
                seeds = " / ".join(f"{x:.2f}" for x in value["normalized"])
                lines.append(f"| {loss} | {steps} | {value['median']:.2f} | {seeds} |")
        lines.append("")
    return lines


def _settings_rows(case: str, runs: list[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """
    One row per setting: median cost, and per rung the median (lowest) random-normalised return over the runs
    that have the setting (their number in brackets after its name when not all do).
    """
    rows = []
    for name, setting in settings.items():
        having = [run for run in runs if name in run["settings"]]
        if not having:
            continue
        teacher = statistics.median(run["teacher_return"] for run in having)
        cost = statistics.median(run["settings"][name]["cost"] for run in having)
        rungs = []
        for rung in RUNGS:
            values = [run["settings"][name]["students"].get(rung, {}).get("normalized") for run in having]
            known = [value for value in values if value is not None]
            median, lowest = (statistics.median(known), min(known)) if known else (None, None)
            rungs.append(f"{_fmt(median, '.2f')} ({_fmt(lowest, '.2f')})")
        described = ", ".join(str(x) for x in setting)
        seeds = "" if len(having) == len(runs) else f"; {len(having)} of {len(runs)} seeds"
        rows.append(f"| {case} | {teacher:.2f} | {name} ({described}{seeds}) | {cost:.3f} | {' | '.join(rungs)} |")
    return rows


def distill_settings_section() -> list[str]:
    """``distill_settings*.json``; files that differ only by ``_seed<N>`` are merged into one table."""
    groups: dict[str, list[pathlib.Path]] = {}
    for path in sorted(RESULTS.glob("distill_settings*.json")):
        groups.setdefault(re.sub(r"_seed\d+$", "", path.stem), []).append(path)
    lines: list[str] = []
    for group, paths in groups.items():
        records = [_load(path.stem) for path in paths]
        runs: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            assert record is not None
            for case, result in record["results"].items():
                runs.setdefault(case, []).extend(result["runs"])
        first = records[0]
        assert first is not None
        settings = {name: value for record in records if record for name, value in record["settings"].items()}
        seeds = sorted({run["seed"] for case_runs in runs.values() for run in case_runs})
        files = ", ".join(f"`{path.name}`" for path in paths)
        lines += [
            f"## The callback's epochs and batch size: cost against quality (`{group}`)",
            "",
            f"{_provenance(first)}; seeds {seeds}; {first['eval_episodes']} evaluation episodes; from {files}. "
            "Every setting distils its own ladder from the same teacher run. Cost: (teacher seconds + the "
            "setting's distillation seconds) / teacher seconds, median. Quality: the students' median "
            "random-normalised return at the end (lowest seed in brackets); teacher: its median return.",
            "",
            "| teacher | return | setting (epochs, batch, lr[, max grad norm]) | cost | 1.7% | 5% | 25% |",
            "|---|---|---|---|---|---|---|",
        ]
        for case, case_runs in runs.items():
            lines += _settings_rows(case, case_runs, settings)
        lines.append("")
    return lines


def vs_imitation_section() -> list[str]:
    lines: list[str] = []
    for path in sorted(RESULTS.glob("vs_imitation*.json")):
        record = _load(path.stem)
        assert record is not None
        settings, versions = record["settings"], record["imitation_versions"]
        lines += [
            f"## Against imitation (`{path.name}`)",
            "",
            f"{_provenance(record)}; imitation {versions['imitation']} (SB3 {versions['stable-baselines3']}, "
            f"gymnasium {versions['gymnasium']}); seeds {settings['seeds']}; {settings['steps']} environment steps; "
            f"{settings['episodes']} evaluation episodes"
            + (f"; sb3-distill options `{settings['options']}`" if settings.get("options") else "")
            + ". `teacher`: teacher-driven against BC; `student`: student-driven against DAgger "
            "(sb3-distill's `collect` option, when given, replaces the mode's).",
            "",
            "| teacher | mode | library | returns | median normalised | median seconds | median env steps |",
            "|---|---|---|---|---|---|---|",
        ]
        paired_lines = []
        for teacher, result in record["summary"].items():
            for key, value in result.items():
                if key == "references":
                    continue
                mode, library = key.split()
                if library == "compared":
                    paired_lines.append(
                        f"- {teacher}, {mode}: medians differ by {value['median_difference']:+.1f} (sb3-distill "
                        f"minus imitation), sb3-distill ahead at {value['sb3_distill_better_in']} of "
                        f"{value['seeds']} seeds, Mann-Whitney p = {value['mann_whitney_p']:.2g}"
                    )
                    continue
                returns = " / ".join(f"{x:.0f}" for x in value["returns"])
                lines.append(
                    f"| {teacher} | {mode} | {library} | {returns} | {value['normalized_median']:.2f} | "
                    f"{value['seconds_median']:.1f} | {value['env_steps_median']:.0f} |"
                )
        lines += ["", *paired_lines, ""] if paired_lines else [""]
    return lines


def bc_ablation_section() -> list[str]:
    record = _load("bc_ablation")
    if record is None:
        return []
    settings = record["settings"]
    lines = [
        "## Teacher-driven distillation against BC, one factor at a time (`bc_ablation.json`)",
        "",
        f"{_provenance(record)}; teacher `{record['teacher']}`; {settings['seeds']} seeds, each variant trained on "
        f"the same {settings['steps']} transitions from the same initial weights; {settings['episodes']} "
        "evaluation episodes.",
        "",
        "| variant | loss | Adam eps | schedule | median return |",
        "|---|---|---|---|---|",
    ]
    for name, variant in record["variants"].items():
        lines.append(
            f"| {name} | {variant['loss']} | {variant['adam_eps']:g} | {variant['schedule']} | "
            f"{record['median_returns'][name]:.1f} |"
        )
    lines += ["", "| a | b | a better in | median a - b | Wilcoxon p |", "|---|---|---|---|---|"]
    for pair in record["pairs"]:
        lines.append(
            f"| {pair['a']} | {pair['b']} | {pair['a_better_in']} / {pair['seeds']} | "
            f"{pair['median_difference']:+.1f} | {pair['wilcoxon_p']:.2g} |"
        )
    return [*lines, ""]


def atari_checkpoints_section() -> list[str]:
    lines: list[str] = []
    paths = sorted(RESULTS.glob("atari_cpu*.json")) + sorted(RESULTS.glob("atari_gpu*.json"))
    for path in paths:
        record = _load(path.stem)
        assert record is not None
        if record["completed"]:
            done = "completed"
        elif record.get("stopped_by_budget"):
            done = f"stopped by its {record['max_seconds']:.0f} s wall-clock budget"
        else:
            done = "not completed: the checkpoints it reached"
        where = record["machine"].get("gpu", "CPU") if record.get("device", "cpu").startswith("cuda") else "CPU"
        lines += [
            f"## Atari on {where} (`{path.name}`)",
            "",
            f"{_provenance(record)}; {record['algo'].upper()} {record['env']}, seed {record['seed']}, "
            f"{record['teacher_steps_done']:,} of {record['teacher_steps']:,} teacher steps ({done}); "
            f"greedy returns over {record['eval_episodes']} episodes per checkpoint, evaluations off the clock.",
            "",
            "| teacher steps | wall time (s) | teacher | student |",
            "|---|---|---|---|",
        ]
        for point in record["curve"]:
            lines.append(
                f"| {point['steps']:,} | {point['seconds']:.0f} | {point['teacher']:.1f} | {point['student']:.1f} |"
            )
        if "teacher_return" in record:
            lines += [
                "",
                f"Final, {record['compression']:.2%} student: teacher {record['teacher_return']:.1f}, student "
                f"{record['student_return']:.1f} (random {record['random_return']:.1f}; normalised "
                f"{_fmt(record['normalized'], '.2f')}), agreement on the student's trajectories "
                f"{record['agreement']:.2f}.",
            ]
        lines.append("")
    return lines


def finetune_section() -> list[str]:
    lines: list[str] = []
    for path in sorted(RESULTS.glob("finetune*.json")):
        record = _load(path.stem)
        assert record is not None
        settings = record["settings"]
        lines += [
            f"## Fine-tuning a distilled student with `to_ppo` (`{path.name}`)",
            "",
            f"{_provenance(record)}; seeds {settings['seeds']}; distilled for {settings['distill_steps']} steps, "
            f"fine-tuned for {settings['steps']}, evaluated every {settings['eval_every']} steps over "
            f"{settings['episodes']} episodes"
            + (
                f"; parity: what `learn` hands over and the teacher on the same {settings['parity_episodes']} "
                "other episodes."
                if settings.get("parity_episodes")
                else "."
            ),
            "",
            "| teacher, config | distilled returns | lowest / distilled (worst seed) | final returns "
            "| final / teacher (at parity: ≥ 0.95) |",
            "|---|---|---|---|---|",
        ]
        for case, result in record["summary"].items():
            if not isinstance(result, dict):
                lines.append(f"| {case} | {result:.1f} | | | |")
                continue
            distilled = " / ".join(f"{value:.3g}" for value in result["distilled"])
            final = " / ".join(f"{value:.3g}" for value in result["final"])
            parity = ""
            if "at_parity" in result:  # runs since parity was counted
                ratios = " / ".join(_fmt(value, ".2f") for value in result["final_over_teacher"])
                parity = f"{ratios} ({result['at_parity']} of {len(result['final'])})"
            lines.append(f"| {case} | {distilled} | {_fmt(result['worst_min_ratio'], '.2f')} | {final} | {parity} |")
        lines.append("")
    return lines


def to_dqn_margin_section() -> list[str]:
    record = _load("to_dqn_margin")
    if record is None:
        return []
    settings = record["settings"]
    lines = [
        "## Fine-tuning a distilled Q-network with DQN and a large-margin loss (`to_dqn_margin.json`)",
        "",
        f"{_provenance(record)}; seeds {settings['seeds']}; teacher {settings['teacher']}; {settings['steps']} "
        "DQN steps; configs as (margin weight, steps it fades over, exploration).",
        "",
        "| config | distilled returns | lowest / distilled per seed | final returns |",
        "|---|---|---|---|",
    ]
    for config, result in record["summary"].items():
        distilled = " / ".join(f"{value:.3g}" for value in result["distilled"])
        lowest = " / ".join(f"{value:.2f}" for value in result["min_ratio"])
        final = " / ".join(f"{value:.3g}" for value in result["final"])
        lines.append(f"| {config} {tuple(settings['configs'][config])} | {distilled} | {lowest} | {final} |")
    lines.append("")
    return lines


#: the options that end real-time distillation: (run key, scores kept before it, what the section says of it)
END_STEPS = {
    "catch_up": (
        "before_catch_up",
        "Catch-up at the end of real-time distillation (`--catch-up`)",
        "`RealTimeDistillCallback(catch_up=N)`: the last N observations, relabelled by the final teacher, fitted",
        "kept",
    ),
    "finish": (
        "before_finish",
        "Student-driven finish at the end of real-time distillation (`--finish`)",
        "`RealTimeDistillCallback(finish_steps=N)`: each student drives an environment of its own for N steps, the"
        " final teacher labelling the states it visits,",
        "steps",
    ),
}


def end_step_section(option: str) -> list[str]:
    """The ladders run with ``--catch-up`` or ``--finish``: each rung before and after it, in the same run."""
    before_key, title, what, amount = END_STEPS[option]
    rows: list[str] = []
    with_option: dict[tuple[str, int, str, int], list[dict[str, Any]]] = {}
    for (algo, env_id, steps), found in sorted(_ladder_runs(end_steps=True).items()):
        for stem, run in sorted(found, key=lambda item: (item[1].get(option) or 0, item[1]["seed"])):
            if not run.get(option):
                continue
            with_option.setdefault((algo, run[option], env_id, steps), []).append(run)
            cells = []
            for rung in RUNGS:
                after = run["students"][rung]
                before = after[before_key]
                cells.append(
                    f"{_fmt(before['normalized'], '.2f')} → {_fmt(after['normalized'], '.2f')} "
                    f"({before['agreement']:.2f} → {after['agreement']:.2f})"
                )
            rows.append(
                f"| {algo} | {env_id} | {steps // 1000}k | {run['seed']} | {run['teacher_return']:.1f} | "
                f"{run[option] // 1000}k | {run[option + '_seconds']:.0f} | {' | '.join(cells)} | `{stem}` |"
            )
    if not rows:
        return []
    return [
        f"## {title}",
        "",
        what,
        "when training ends. The same students scored before and after it, in the same run (random-normalised",
        "return, greedy agreement on the teacher's trajectories in brackets): on the same episodes where the run",
        "records `eval_seed`, else on the next episodes of one evaluation environment, which",
        'adds the noise of different episodes to each change (unbiased; README, "Evaluation episodes").',
        "",
        f"| algo | environment | teacher steps | seed | teacher return | {amount} | seconds | 1.7% | 5% | 25% | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *_end_step_medians(_ladder_runs(), with_option, amount),
    ]


def _changes(runs: list[dict[str, Any]], rung: str) -> list[float]:
    """A rung's normalised return after an end step minus before it, per run scored both times."""
    return [
        after - before
        for run in runs
        if (before := _default_scores(run, rung)["normalized"]) is not None
        and (after := _final_scores(run, rung)["normalized"]) is not None
    ]


def _paired(changes: list[float], rung: str) -> str:
    """Paired changes of a rung, one per teacher: how many are higher, the median change, Wilcoxon's p."""
    if not changes:
        return f"{rung.replace('pct', '%')} not scored"
    p_value = _wilcoxon_p(changes)
    return (
        f"{rung.replace('pct', '%')} higher in {sum(change > 0 for change in changes)} of {len(changes)}, "
        f"median change {statistics.median(changes):+.2f}, Wilcoxon signed-rank p = {_fmt(p_value, '.2g')}"
    )


def _longer_end_steps(with_option: dict[tuple[str, int, str, int], list[dict[str, Any]]], unit: str) -> list[str]:
    """
    Where one task's teachers (``_teacher_key``: bit for bit the same) ended with two amounts of an end step,
    the larger against the smaller: each rung's final score, paired per teacher.
    """
    lines = []
    for algo, small, env_id, steps in sorted(with_option):
        for large in sorted(amount for a, amount, e, s in with_option if (a, e, s) == (algo, env_id, steps)):
            if large <= small:
                continue
            shorter = {_teacher_key(run): run for run in with_option[algo, small, env_id, steps]}
            pairs = [
                (shorter[key], run)
                for run in with_option[algo, large, env_id, steps]
                if (key := _teacher_key(run)) in shorter
            ]
            if not pairs:
                continue
            paired = []
            for rung in RUNGS:
                scores = [
                    (_final_scores(a, rung)["normalized"], _final_scores(b, rung)["normalized"]) for a, b in pairs
                ]
                paired.append(_paired([b - a for a, b in scores if a is not None and b is not None], rung))
            lines.append(
                f"- {algo.upper()} {env_id} {steps // 1000}k, {large // 1000}k {unit} against {small // 1000}k on the "
                f"same {_count(len(pairs), 'teacher')}: {'; '.join(paired)}."
            )
    return ["Longer against shorter, on the same teachers:", "", *lines, ""] if lines else []


def _end_step_medians(
    cases: dict[tuple[str, str, int], list[tuple[str, dict[str, Any]]]],
    with_option: dict[tuple[str, int, str, int], list[dict[str, Any]]],
    unit: str,
) -> list[str]:
    """
    The medians before and after an end step, per task and amount, and the targets counted with it: each task where
    at least ``END_STEP_MIN_RUNS`` runs made it at its medians after it (over those runs), every other task at its
    default figure (as above), so that a few easy teachers cannot carry a task. Each amount (100k, 300k finish
    steps...) is counted on its own.
    """
    lines = ["Medians over the runs that made it, before → after (in brackets: in how many runs it ended higher):", ""]
    for (algo, amount, env_id, steps), runs in sorted(with_option.items()):
        cells = []
        for rung in RUNGS:
            before, after = _median_normalized(runs, rung), _median_normalized(runs, rung, final=True)
            higher = sum(change > 0 for change in _changes(runs, rung))
            cells.append(f"{_fmt(before, '.2f')} → {_fmt(after, '.2f')} ({higher})")
        lines.append(
            f"- {algo.upper()} {amount // 1000}k {unit}, {env_id} {steps // 1000}k ({_count(len(runs), 'run')}): "
            f"{' / '.join(cells)}"
        )
    lines += ["", "Paired over every run that made it, per algorithm and amount (each run its own teacher):", ""]
    for algo, amount in sorted({key[:2] for key in with_option}):
        runs = [run for key, found in sorted(with_option.items()) if key[:2] == (algo, amount) for run in found]
        paired = "; ".join(_paired(_changes(runs, rung), rung) for rung in RUNGS)
        lines.append(f"- {algo.upper()} {amount // 1000}k {unit} ({_count(len(runs), 'run')}): {paired}.")
    lines += ["", *_longer_end_steps(with_option, unit)]
    for algo, amount in sorted({key[:2] for key in with_option}):
        tasks, made = {}, []
        for env_id, steps in _chosen_budgets(cases, algo).items():
            runs = with_option.get((algo, amount, env_id, steps), [])
            if len(runs) >= END_STEP_MIN_RUNS:
                tasks[env_id] = (runs, True)
                made.append(f"{env_id} {steps // 1000}k x {_count(len(runs), 'run')}")
            else:
                tasks[env_id] = ([run for _, run in cases[algo, env_id, steps]], False)
        if made:
            fewer = f"fewer than {END_STEP_MIN_RUNS} runs made it"
            where = f"{', '.join(made)}; default options elsewhere and where {fewer}"
            lines.append(
                f"- {algo.upper()} with it ({amount // 1000}k {unit}) where it ran at the budget above ({where}): "
                f"{_verdicts(tasks)}."
            )
    return [*lines, ""]


def reevaluated_section() -> list[str]:
    """``reevaluate_ladders.py``: saved ladders scored again on more, other episodes, beside the runs' own scores."""
    lines: list[str] = []
    sources: list[str] = []
    for path in sorted(RESULTS.glob("reevaluated_*.json")):
        record = json.loads(path.read_text())
        ladders = ", ".join(f"`{name}`" for name in record["ladder_results"])
        sources.append(f"- `{path.stem}`: {_provenance(record)}; seed {record['eval_seed']}; from {ladders}.")
        if not lines:
            lines += [
                "## Saved ladders evaluated again (`reevaluated_*.json`)",
                "",
                "The final teacher and students of saved runs, scored again on more episodes of another evaluation",
                "seed (`benchmarks/reevaluate_ladders.py`): random-normalised return on these episodes, the run's",
                "own figure (its final evaluation) in brackets; the last row of a file, the medians over its seeds.",
                "",
                "| file | game | seed | teacher return | 1.7% | 5% | 25% |",
                "|---|---|---|---|---|---|---|",
            ]
        for key, entry in record["results"].items():
            for run in entry["runs"]:
                cells = [
                    f"{_fmt(value['normalized'], '.2f')} ({_fmt(value['run_normalized'], '.2f')})"
                    for value in run["students"].values()
                ]
                lines.append(
                    f"| `{path.stem}` ({record['episodes']} episodes) | {key} | {run['seed']} | "
                    f"{run['teacher_return']:.1f} ({run['run_teacher_return']:.1f}) | {' | '.join(cells)} |"
                )
            summary = entry["summary"]
            cells = [
                f"{_fmt(summary['normalized'][rung], '.2f')} ({_fmt(summary['run_normalized'][rung], '.2f')})"
                for rung in summary["normalized"]
            ]
            lines.append(f"| `{path.stem}` | {key} | median | {summary['teacher_return']:.1f} | {' | '.join(cells)} |")
    return [*lines, "", *sources, ""] if lines else []


def q_temperature_section() -> list[str]:
    """``q_temperature.py``: offline students of saved teachers, per KL temperature, family, or resumed."""
    lines: list[str] = []
    for path in sorted(RESULTS.glob("q_temperature*.json")):
        record = json.loads(path.read_text())
        teachers = sorted({run["run_seed"] for run in record["runs"]})
        students = sorted({run["seed"] for run in record["runs"]})
        lines += [
            f"## Offline from saved teachers: KL temperature, student family, resume (`{path.stem}.json`)",
            "",
            f"{_provenance(record)}; from {', '.join(f'`{name}`' for name in record['from_ladder'])} (teacher "
            f"seeds {teachers}); {record['steps']} student-driven steps, student seeds {students} per "
            f"teacher, {record['episodes']} episodes of seed {record['eval_seed']} for teacher, random and "
            "student alike. Random-normalised median over teachers and seeds; the paired difference to the "
            f"first setting ({record['settings'][0]}) on the same teacher and seed, and in how many pairs it is "
            "higher. `resume`: the run's own real-time student distilled further, each teacher's as "
            "before → after.",
            "",
            "| setting | rung | median | lowest | difference to first (median) | higher | each teacher |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, entry in record["summary"].items():
            setting, rung = label.split(" ")
            games = {run.get("env") for run in record["runs"]}
            each = " / ".join(
                (f"{run['env'].split('/')[-1]}: " if len(games) > 1 else "")
                + ("" if "start_normalized" not in run else f"{_fmt(run['start_normalized'], '.2f')} → ")
                + _fmt(run["normalized"], ".2f")
                for run in sorted(record["runs"], key=lambda run: (run.get("env", ""), run["run_seed"], run["seed"]))
                if (run["setting"], run["rung"]) == (setting, rung)
            )
            lines.append(
                f"| {setting} | {rung} | {_fmt(entry['normalized_median'], '.2f')} | "
                f"{_fmt(entry['normalized_lowest'], '.2f')} | {_fmt(entry['difference_to_first_median'], '+.2f')} | "
                f"{entry['better_than_first']} of {entry['pairs']} | {each} |"
            )
        lines.append("")
    return lines


def _from_ladder_lines(name: str, record: dict[str, Any]) -> list[str]:
    """``offline_vs_realtime.py --from-ladder``: per saved run and rung, seconds to the target."""
    lines = [
        f"## Real-time against sequential distillation, strong teachers (`{name}.json`)",
        "",
        f"{_provenance(record)}; from the ladders {', '.join(f'`{n}`' for n in record['ladder_results'])}. Seconds "
        f"until a student first reaches {record['target']:.0%} of the final teacher's return: real time (the run's "
        "curve, 5 episodes a point, then its final evaluation) against the teacher's time alone (estimated from "
        f"{record['probe_steps'] // 1000}k steps timed here) plus offline distillation of a fresh student of the same "
        f"rung from the final teacher (student-driven, 10 episodes every {record['eval_every'] // 1000}k steps, "
        f"at most {record['offline_steps'] // 1000}k). `n/a`: not reached.",
        "",
        "| run | teacher return | teacher alone (s, est.) | rung | real time (s) | offline (s) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, outcome in record["results"].items():
        for rung, row in outcome.items():
            if not isinstance(row, dict):
                continue
            lines.append(
                f"| {run} | {outcome['teacher_return']:.1f} | {outcome['teacher_seconds_alone_estimated']:.0f} | "
                f"{rung} | {_fmt(row['realtime_seconds_to_target'], '.0f')} | "
                f"{_fmt(row['offline_seconds_to_target'], '.0f')} | {_fmt(row['ratio'], '.2f')} |"
            )
    return [*lines, ""]


def realtime_section() -> list[str]:
    lines: list[str] = []
    for path in sorted(RESULTS.glob("offline_vs_realtime*.json")):
        name = path.stem
        record = json.loads(path.read_text())
        if record.get("mode") == "from_ladder":
            lines += _from_ladder_lines(name, record)
            continue
        lines += [
            f"## Real-time against sequential distillation (`{name}.json`)",
            "",
            f"{_provenance(record)}; seeds {record['seeds']}. Wall time until the student reaches "
            f"{record['target']:.0%} of the teacher's final return, real-time / sequential (median):",
            "",
            "| environment | median ratio |",
            "|---|---|",
        ]
        for env_id, result in record["results"].items():
            lines.append(f"| {env_id} | {_fmt(result['median_ratio'])} |")
        lines.append("")
    return lines


def deployment_section() -> list[str]:
    record = _load("deployment")
    if record is None:
        return []
    lines = [
        "## Deployment: CPU latency at batch 1 and ONNX size (`deployment.json`)",
        "",
        f"{_provenance(record)}; one thread; median over {record['calls']} single observations. `predict`: SB3's "
        "`policy.predict(obs, deterministic=True)`; ONNX: the file `export` writes, run by onnxruntime.",
        "",
        "| teacher | network | weights | acting parameters | share | predict (µs) | ONNX (µs) | ONNX file (kB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, result in record["results"].items():
        for name, row in result["policies"].items():
            lines.append(
                f"| {case} | {name} | {result['weights']} | {row['acting_parameters']:,} | {row['share']:.1%} | "
                f"{row['predict_us']:.0f} | {row['onnx_us']:.1f} | {row['onnx_bytes'] / 1000:.1f} |"
            )
    return [*lines, ""]


def minatar_teachers_section() -> list[str]:
    runs = [_load(path.stem) for path in sorted(RESULTS.glob("minatar_teachers_*.json"))]
    if not runs:
        return []
    lines = [
        "## PPO teachers on MinAtar (`minatar_teachers_*.json`)",
        "",
        "Each teacher trained alone, evaluated greedily at checkpoints (mean return over the episodes shown). "
        "`atari-mlp` is the first MinAtar entry of `hyperparams/ppo.yml`; `cnn-clip` the entry since.",
        "",
        "| game | variant | settings | seed | return at the checkpoints (steps) | provenance |",
        "|---|---|---|---|---|---|",
    ]
    for record in runs:
        assert record is not None
        curve = ", ".join(f"{point['return']:.1f} ({point['steps'] // 1000}k)" for point in record["curve"])
        lines.append(
            f"| {record['env']} | {record['variant']} | {record['settings']} | {record['seed']} | {curve} | "
            f"{_provenance(record)}; {record['eval_episodes']} episodes |"
        )
    return [*lines, ""]


def write(path: pathlib.Path) -> None:
    """Write the results page (Markdown) to ``path``."""
    lines = [
        "# Results",
        "",
        "Every figure below comes from a JSON file under `benchmarks/results/`, which records the git commit,",
        "the package versions, the machine, the seeds and the budgets; the scripts in `benchmarks/` rerun them",
        "(`make bench` runs the quick sizes).",
        "",
    ]
    lines += ladder_summary_section()
    lines += students_section("students_vs_teacher", "Students against their teachers (full size)")
    lines += students_section("students_vs_teacher_quick", "Students against their teachers (`--quick`)")
    for run in sorted(RESULTS.glob("students_vs_teacher_*.json")):
        if run.stem != "students_vs_teacher_quick":
            lines += students_section(run.stem, f"Students against their teachers (`{run.stem}`)")
    lines += end_step_section("catch_up") + end_step_section("finish") + reevaluated_section() + q_temperature_section()
    lines += student_architectures_section()
    lines += minatar_teachers_section()
    lines += students_section("atari", "Atari (GPU)") + atari_checkpoints_section()
    lines += overhead_section() + packing_section() + realtime_section()
    lines += datafree_section() + datafree_q_values_section()
    lines += finetune_section() + to_dqn_margin_section() + continuous_section() + distill_settings_section()
    lines += vs_imitation_section() + bc_ablation_section()
    lines += deployment_section()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
