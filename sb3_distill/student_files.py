"""Student files: :func:`save_student` writes a student, :func:`load_student` rebuilds it without its teacher.

A student file is an SB3 policy file (``{"state_dict", "data"}``, loadable with ``PolicyClass.load``) with one
more entry, ``"sb3_distill"``: the policy class, the file format's version and the ``VecNormalize``
statistics the student was distilled under. Writes are atomic (:mod:`sb3_distill.serialization`).

Students are plain SB3 policies, so ``student.save(path)`` also works: it writes SB3's own policy file,
without the class or the statistics; :func:`load_student` reads it back when given ``policy_class``.

The one thing a distillation adds to a student object is a record beside its weights: the attribute
``obs_normalization`` (:func:`obs_normalization` reads it, ``None`` when the teacher did not normalise),
which :func:`~sb3_distill.normalization.wrap_env`, :func:`~sb3_distill.export.export` and
:func:`save_student` use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.utils import get_device

from sb3_distill.normalization import obs_normalization, record_obs_normalization
from sb3_distill.serialization import PathLike, atomic_torch_save, torch_load
from sb3_distill.students import import_name

#: Marker stored in every student file and checkpoint written by this package.
FILE_FORMAT_KEY = "sb3_distill"
FILE_FORMAT_VERSION = 1


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def constructor_parameters(student: BasePolicy) -> dict[str, Any]:
    """
    What rebuilds the student: SB3's ``_get_constructor_parameters``, with an actor-critic's
    ``share_features_extractor``, which SB3 leaves out (a policy rebuilt without it shares one extractor, and
    loading the weights of two into it overwrites the actor's features extractor with the critic's).

    :param student: an SB3 policy
    :return: its constructor's keyword arguments
    """
    data = student._get_constructor_parameters()
    if isinstance(student, ActorCriticPolicy):
        data["share_features_extractor"] = student.share_features_extractor
    return data


def _shares_extractor(state_dict: Mapping[str, th.Tensor]) -> bool:
    """Whether a saved actor-critic's actor and critic read one features extractor (files that did not record it)."""
    pairs = (
        (tensor, state_dict.get(key.replace("pi_features_extractor.", "vf_features_extractor.", 1)))
        for key, tensor in state_dict.items()
        if key.startswith("pi_features_extractor.")
    )
    return all(critic is None or th.equal(actor, critic) for actor, critic in pairs)


def student_payload(student: BasePolicy) -> dict[str, Any]:
    """
    :param student: an SB3 policy
    :return: the dict :func:`save_student` writes
    """
    if not isinstance(student, BasePolicy):
        raise TypeError(f"a student is an SB3 BasePolicy, not {type(student).__name__}")
    return {
        "state_dict": student.state_dict(),
        "data": constructor_parameters(student),
        FILE_FORMAT_KEY: {
            "version": FILE_FORMAT_VERSION,
            "policy_class": _class_path(type(student)),
            "obs_normalization": obs_normalization(student),
        },
    }


def save_student(student: BasePolicy, path: PathLike) -> None:
    """
    Save a student atomically (temporary file in the same folder, then rename), with its class and statistics.

    :param student: the student (any SB3 policy)
    :param path: destination file; :func:`load_student` reads it back
    """
    atomic_torch_save(student_payload(student), path)


def _build(policy_class: type[BasePolicy], payload: Mapping[str, Any]) -> BasePolicy:
    data = dict(payload["data"])
    if issubclass(policy_class, ActorCriticPolicy) and "share_features_extractor" not in data:
        data["share_features_extractor"] = _shares_extractor(payload["state_dict"])
    with th.random.fork_rng(devices=[]):  # the weights are overwritten: keep the user's generator untouched
        student = policy_class(**data)
    student.load_state_dict(payload["state_dict"])
    return student


def student_from_payload(
    payload: Mapping[str, Any], device: th.device | str = "auto", policy_class: type[BasePolicy] | None = None
) -> BasePolicy:
    """
    Rebuild a student from :func:`student_payload`'s dict.

    :param payload: the saved dict
    :param device: where the student is loaded
    :param policy_class: the class of a plain SB3 policy file (``policy.save``), which records none
    :return: the student
    """
    if not isinstance(payload, Mapping) or "data" not in payload or "state_dict" not in payload:
        raise ValueError("not a student file (no 'data' and 'state_dict' entries)")
    meta = payload.get(FILE_FORMAT_KEY)
    if isinstance(meta, Mapping):
        try:
            saved_class = import_name(meta["policy_class"], "the student's policy class")
        except ImportError as error:
            raise ImportError(
                f"{error}; define it in an importable module (not in __main__ or a function) and import "
                f"that module before loading"
            ) from error
        if policy_class is not None and not issubclass(saved_class, policy_class):
            raise TypeError(f"the file holds a {saved_class.__name__}, not a {policy_class.__name__}")
        student = _build(saved_class, payload)
        record_obs_normalization(student, meta.get("obs_normalization"))
    elif policy_class is None:
        raise ValueError(
            "a plain SB3 policy file (written by policy.save), which does not record its class: pass "
            "policy_class= (ActorCriticPolicy, say), or save with sb3_distill.save_student, which also keeps "
            "the VecNormalize statistics"
        )
    else:
        student = _build(policy_class, payload)
    return student.to(get_device(device))


def load_student(
    path: PathLike,
    name: str | None = None,
    device: th.device | str = "auto",
    policy_class: type[BasePolicy] | None = None,
) -> BasePolicy:
    """
    Load a student saved with :func:`save_student` or from a distillation checkpoint (``distill.save(path)``).

    :param path: the file
    :param name: which student of a checkpoint holding several (default: the only one)
    :param device: where the student is loaded (``"auto"``: CUDA if available)
    :param policy_class: needed only for a plain SB3 policy file (``student.save(path)``), which does not
        record its class; for a student file, the class it must be (checked)
    :return: the student, an SB3 policy
    """
    saved = torch_load(path, device=get_device(device))
    if not isinstance(saved, Mapping):
        raise ValueError(f"{str(path)!r} is not a student file")
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
        return student_from_payload(saved, device=device, policy_class=policy_class)
    except ValueError as error:
        raise ValueError(f"{str(path)!r}: {error}") from error
