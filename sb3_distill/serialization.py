"""Atomic file writes: a crash mid-save never leaves a corrupt or half-written file behind."""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import tempfile
from typing import Any

import torch as th

PathLike = str | os.PathLike


def check_save_path(path: PathLike) -> pathlib.Path:
    """
    Check that ``path`` can be written as a file.

    :param path: destination file
    :return: the path as a ``pathlib.Path``
    """
    target = pathlib.Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot save to {str(target)!r}: it is a directory, expected a file path")
    parent = target.parent if str(target.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot save to {str(target)!r}: directory {str(parent)!r} does not exist")
    return target


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    """
    Write ``data`` to ``path`` atomically: into a temporary file of the same folder, then ``os.replace``.

    :param data: file contents
    :param path: destination file; its folder must exist
    """
    target = check_save_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """
    ``torch.save`` that never leaves a partial file: the object is serialised in memory first.

    :param obj: what to save
    :param path: destination file
    """
    check_save_path(path)
    buffer = io.BytesIO()
    th.save(obj, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


def torch_load(path: PathLike, device: th.device | str = "cpu") -> Any:
    """
    Load a file written by ``atomic_torch_save``.

    :param path: the file
    :param device: where tensors are mapped
    :return: the saved object
    """
    target = pathlib.Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"no such file: {str(target)!r}")
    # Policies pickle their spaces and classes, as SB3's own ``BasePolicy.load`` does.
    try:
        return th.load(target, map_location=device, weights_only=False)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:  # another kind of file (an SB3 model zip, say)
        raise ValueError(
            f"{str(target)!r} is not a file written by sb3_distill "
            f"(for a trained agent's zip, use load_teacher): {error}"
        ) from error
