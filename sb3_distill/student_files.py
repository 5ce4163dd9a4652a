"""Student files: what a student's ``save`` writes, and :func:`load_student`, which rebuilds it without its teacher.

A student file is an SB3 policy file (``{"state_dict", "data"}``, loadable with ``PolicyClass.load``) with one
more entry: the policy class, the file format's version and the ``VecNormalize`` statistics the student was
distilled under. Writes are atomic (:mod:`sb3_distill.serialization`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import get_device

from sb3_distill.serialization import PathLike, torch_load
from sb3_distill.students import FILE_FORMAT_KEY, StudentMixin, as_student_class, import_name


def student_payload(student: BasePolicy) -> dict[str, Any]:
    """
    :param student: a student built by :func:`make_student` or :func:`load_student`
    :return: the dict its ``save`` writes
    """
    if not isinstance(student, StudentMixin):
        raise TypeError(f"{type(student).__name__} is not a student built by sb3_distill")
    return student.to_payload()


def student_from_payload(payload: Mapping[str, Any], device: th.device | str = "auto") -> BasePolicy:
    """
    Rebuild a student from :meth:`StudentMixin.to_payload`'s dict.

    :param payload: the saved dict
    :param device: where the student is loaded
    :return: the student
    """
    meta = payload.get(FILE_FORMAT_KEY) if isinstance(payload, Mapping) else None
    if not isinstance(meta, Mapping) or "data" not in payload or "state_dict" not in payload:
        raise ValueError("not a student saved by sb3_distill (no student entry found)")
    try:
        policy_class = as_student_class(import_name(meta["policy_class"], "the student's policy class"))
    except ImportError as error:
        raise ImportError(
            f"{error}; define it in an importable module (not in __main__ or a function) and import "
            f"that module before loading"
        ) from error
    with th.random.fork_rng(devices=[]):  # the weights are overwritten: keep the user's generator untouched
        student = policy_class(**payload["data"])
    assert isinstance(student, StudentMixin)
    student.load_state_dict(payload["state_dict"])
    student.obs_normalization = meta.get("obs_normalization")
    return student.to(get_device(device))


def load_student(path: PathLike, name: str | None = None, device: th.device | str = "auto") -> BasePolicy:
    """
    Load a student saved with ``student.save(path)`` or from a distillation checkpoint (``distill.save(path)``).

    :param path: the file
    :param name: which student of a checkpoint holding several (default: the only one)
    :param device: where the student is loaded (``"auto"``: CUDA if available)
    :return: the student, an SB3 policy
    """
    saved = torch_load(path, device=get_device(device))
    if not isinstance(saved, Mapping):
        raise ValueError(f"{str(path)!r} is not a student saved by sb3_distill")
    if "students" in saved and FILE_FORMAT_KEY in saved:
        students = saved["students"]
        if name is None:
            if len(students) != 1:
                raise ValueError(f"{str(path)!r} holds several students {sorted(students)}: pass name=")
            (name,) = students
        if name not in students:
            raise KeyError(f"{str(path)!r} has no student {name!r}; it holds {sorted(students)}")
        saved = students[name]
    try:
        return student_from_payload(saved, device=device)
    except ValueError as error:
        raise ValueError(f"{str(path)!r}: {error}") from error
