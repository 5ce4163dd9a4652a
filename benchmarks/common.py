"""What every benchmark result records: the code, the packages, the machine, so a figure can be traced and rerun."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
from importlib import metadata
from typing import Any

import torch as th

from sb3_distill.serialization import atomic_write_bytes

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
PACKAGES = ("sb3-distill", "stable-baselines3", "torch", "gymnasium", "numpy", "ale-py", "minatar")


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return commit + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": th.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if th.cuda.is_available():
        info["gpu"] = th.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_result(name: str, data: dict[str, Any]) -> pathlib.Path:
    """Write ``results/<name>.json`` atomically, with the commit, package versions and machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"commit": git_commit(), "versions": versions(), "machine": machine(), **data}
    atomic_write_bytes((json.dumps(record, indent=2) + "\n").encode(), path)
    return path
