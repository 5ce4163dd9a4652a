"""Atomic file writes: a crash mid-save never leaves a corrupt or half-written file behind."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import pathlib
import pickle
import tempfile
from collections.abc import Iterator
from typing import Any

import torch as th

PathLike = str | os.PathLike


def check_save_path(path: PathLike) -> pathlib.Path:
    """
    Check that ``path`` can be written as a file: its folder exists and takes a new file (tried, not guessed).

    :param path: destination file
    :return: the path as a ``pathlib.Path``
    """
    target = pathlib.Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot save to {str(target)!r}: it is a directory, expected a file path")
    parent = target.parent if str(target.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot save to {str(target)!r}: directory {str(parent)!r} does not exist")
    try:
        with atomic_target(target) as probe:
            probe.write_bytes(b"")
            raise _Probe
    except _Probe:
        pass
    except OSError as error:
        raise PermissionError(f"cannot save to {str(target)!r}: {str(parent)!r} is not writable ({error})") from error
    return target


class _Probe(Exception):
    """Ends a write test without replacing the destination."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(target: pathlib.Path) -> list[pathlib.Path]:
    """
    Delete the temporary files that killed processes left while writing ``target``.

    Temporary files are named ``.{name}.{pid}.{random}.tmp``: those of a process that is gone are removed,
    a live writer's are left alone.

    :param target: the destination file
    :return: the files removed
    """
    removed = []
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        pid = candidate.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    return removed


@contextlib.contextmanager
def atomic_target(path: PathLike) -> Iterator[pathlib.Path]:
    """
    A temporary path in ``path``'s folder to write; it replaces ``path`` when the block ends without error.

    Whatever goes wrong, ``path`` holds either its old content or the complete new one, and the
    temporary file is gone; those that killed processes left behind are removed first.

    :param path: destination file; its folder must exist
    :return: the temporary path to write
    """
    target = pathlib.Path(path)
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    temporary = pathlib.Path(tmp_name)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    """
    Write ``data`` to ``path`` atomically: into a temporary file of the same folder, then ``os.replace``.

    :param data: file contents
    :param path: destination file; its folder must exist
    """
    _write(data, check_save_path(path))


def _write(data: bytes, target: pathlib.Path) -> None:
    """The atomic write itself, to a destination already checked."""
    with atomic_target(target) as temporary, open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """
    ``torch.save`` that never leaves a partial file: the object is serialised in memory first.

    :param obj: what to save
    :param path: destination file
    """
    target = check_save_path(path)  # before serialising what may be a large object
    buffer = io.BytesIO()
    th.save(obj, buffer)
    _write(buffer.getvalue(), target)


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
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError) as error:  # damaged, or another kind of file
        raise ValueError(
            f"{str(target)!r} is damaged (cut short?) or not a file written by sb3_distill "
            f"(for a trained agent's zip, use load_teacher): {type(error).__name__}: {error}"
        ) from error
