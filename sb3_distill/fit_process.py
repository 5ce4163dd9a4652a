"""Fitting the students in a second process (``RealTimeDistillCallback(background="process")``).

A background thread shares Python's interpreter lock with the teacher, whose collection is Python-bound: with
small students, whose updates are many small operations, the two threads take turns more than they overlap.
A process has its own interpreter. It holds a copy of the distiller (its students, optimisers and packing;
not the teacher). Every job returns the students' weights, optimiser states and minibatch generator as the
fit left them, and the training process loads them: it stays the one that owns them, as with a thread. A job
carries the generator (drawing a replay batch moves it) and, when they changed in the training process (a fit
in the foreground), the weights and optimiser states. The teacher labels each batch in the training process,
so the worker never needs it. What the process costs per fit (sending the batch, bringing back the state) is
small beside a thread's contention, for on-policy and replay teachers alike; ``benchmarks/overhead.py`` measures it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import multiprocessing
import pickle
import sys
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

import cloudpickle
import numpy as np
import torch as th

from sb3_distill.distiller import Distiller
from sb3_distill.outputs import PolicyOutputs


class _TeacherFacts:
    """What fitting reads of the teacher (its policy only for continuous actions), without its model."""

    def __init__(self, distiller: Distiller) -> None:
        teacher = distiller.teacher
        self.kind = teacher.kind
        self.acting_parameters = teacher.acting_parameters
        self.device = teacher.device
        self.policy = teacher.policy if distiller.continuous else None


def _tensor_from_array(array: np.ndarray, channels_last: bool, device: str) -> th.Tensor:
    """The tensor :class:`_Pickler` sent (an image batch stored channels-last comes back so, without a copy)."""
    tensor = th.from_numpy(array)
    if channels_last:
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor if device == "cpu" else tensor.to(device)


class _Pickler(pickle.Pickler):
    """
    Pickles tensors as NumPy arrays (their bytes in one buffer): a fit's state is dozens of small tensors, which
    ``torch.save`` writes at a fixed cost each (a fit's state back in 0.8 ms instead of 0.06 on CartPole).
    """

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not th.Tensor or obj.requires_grad or obj.dtype not in _NUMPY_DTYPES:
            return NotImplemented  # parameters, tensors in a graph, other dtypes: pickled as torch does
        device = str(obj.device)
        tensor = obj.detach().cpu()
        channels_last = tensor.dim() == 4 and not tensor.is_contiguous()
        channels_last = channels_last and tensor.is_contiguous(memory_format=th.channels_last)
        array = (tensor.permute(0, 2, 3, 1) if channels_last else tensor).numpy()
        return _tensor_from_array, (array, channels_last, device)


#: the tensor dtypes NumPy holds as they are
_NUMPY_DTYPES = {th.float16, th.float32, th.float64, th.uint8, th.int8, th.int16, th.int32, th.int64, th.bool}


def _to_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=5).dump(value)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    return pickle.loads(data)


def fit_state(distiller: Distiller, with_weights: bool = True) -> dict[str, Any]:
    """
    :param with_weights: with the students' weights and optimiser states (else the generator and counters only)
    :return: what a fit changes: the students' weights, their optimisers, the minibatch generator, counters
    """
    state: dict[str, Any] = {
        "numpy_rng": distiller.rng.bit_generator.state,
        "skipped_updates": dict(distiller.skipped_updates),
        "non_finite_targets": distiller.non_finite_targets,
        "values_calibrated": sorted(distiller.values_calibrated),
    }
    if with_weights:
        state["students"] = {name: student.state_dict() for name, student in distiller.students.items()}
        state["optimizers"] = {name: optimizer.state_dict() for name, optimizer in distiller.optimizers.items()}
    return state


def load_fit_state(distiller: Distiller, state: dict[str, Any]) -> None:
    """Give ``distiller`` what :func:`fit_state` returned (weights copied in place: packing reads them)."""
    if "students" in state:
        for name, student in distiller.students.items():
            student.load_state_dict(state["students"][name])
        for name, optimizer in distiller.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
    distiller.rng.bit_generator.state = state["numpy_rng"]
    distiller.skipped_updates = dict(state["skipped_updates"])
    distiller.non_finite_targets = int(state["non_finite_targets"])
    distiller.values_calibrated = set(state["values_calibrated"])


class WorkerTraceback(Exception):
    """Where in the worker process an error was raised (the ``__cause__`` of the error raised here)."""


def _worker_loop(connection: Connection, payload: bytes) -> None:
    """
    The worker process: load the distiller copy, say so, then fit each job until an empty message (or the
    training process's end) stops it. Errors go back to the training process, raised there.
    """
    th.set_num_threads(1)  # one core for the students (small networks); forked, also what keeps OpenMP safe
    distiller = pickle.loads(payload)
    connection.send_bytes(_to_bytes(("ok", None)))
    while True:
        try:
            job = connection.recv_bytes()
        except (EOFError, OSError):  # the training process has gone
            return
        if not job:
            return
        try:
            start_time = time.perf_counter()
            state, obs, targets, progress_remaining, epochs = _from_bytes(job)
            load_fit_state(distiller, state)
            metrics = distiller.fit(obs, targets, progress_remaining, epochs)
            reply = _to_bytes(("ok", (fit_state(distiller), metrics, time.perf_counter() - start_time)))
        except Exception as error:  # every error is the training process's to raise
            reply = _error_reply(error)
        connection.send_bytes(reply)


def _error_reply(error: Exception) -> bytes:
    """The error and its traceback, pickled (an error that cannot be pickled goes as a ``RuntimeError``)."""
    trace = "".join(traceback.format_exception(error))
    try:
        return _to_bytes(("error", (error, trace)))
    except Exception:  # the error cannot be pickled
        return _to_bytes(("error", (RuntimeError(f"{type(error).__name__}: {error}"), trace)))


class PendingFit:
    """A fit running in the worker; :meth:`result` waits for it and gives its state back to the distiller."""

    def __init__(self, process: FitProcess, label_seconds: float) -> None:
        self.process = process
        self.label_seconds = label_seconds
        self._metrics: dict[str, Any] | None = None

    def done(self) -> bool:
        """:return: whether the worker has answered (then :meth:`result` does not wait)"""
        return self._metrics is not None or self.process.connection.poll()

    def result(self) -> dict[str, Any]:
        """:return: the fit's metrics, ``time_s`` the labelling's and the worker's (its errors are raised here)"""
        if self._metrics is None:
            state, metrics, seconds = self.process.receive()
            load_fit_state(self.process.distiller, state)
            self.process.worker_is_current = True
            self._metrics = self.process.distiller.with_time(metrics, self.label_seconds + seconds)
        return self._metrics


class FitProcess:
    """
    One worker process fitting a distiller's students on batches the teacher labelled in this process.

    Jobs and results travel through a pipe, written and read by the training thread itself: no helper thread
    competes with the teacher's for the interpreter lock (a ``ProcessPoolExecutor``'s did, at up to a few
    milliseconds a fit).

    :param distiller: the distiller whose students are fitted (its teacher stays here)
    """

    def __init__(self, distiller: Distiller) -> None:
        self.distiller = distiller
        #: whether the worker holds the students' weights and optimiser states as they are here
        self.worker_is_current = False
        worker_copy = copy.copy(distiller)
        worker_copy.teacher = _TeacherFacts(distiller)  # type: ignore[assignment]
        try:  # cloudpickle, as SB3 saves its data: schedules may be lambdas, students defined in a script
            payload = cloudpickle.dumps(worker_copy)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            raise ValueError(
                f"background='process' needs students, optimisers and options that can be pickled: {error}; "
                "use background='thread' instead"
            ) from error
        context = self._context(distiller)
        self.connection, worker_end = context.Pipe()
        self.process = context.Process(  # type: ignore[attr-defined]
            target=_worker_loop, args=(worker_end, payload), daemon=True
        )
        try:  # started now, not at the first fit: a worker that cannot start fails before the teacher's first step
            self.process.start()
            worker_end.close()  # this process's copy: the worker's end is then closed when the worker ends
            self.receive()
        except (EOFError, OSError, RuntimeError) as error:
            self.close()
            raise RuntimeError(
                "background='process' could not start its worker process: a script that trains needs the "
                "`if __name__ == '__main__':` guard (as with SB3's SubprocVecEnv); or use background='thread'"
            ) from error

    def receive(self) -> Any:
        """:return: the worker's next answer (waiting for it); an error raised there is raised here"""
        try:
            status, value = _from_bytes(self.connection.recv_bytes())
        except (EOFError, OSError) as error:
            raise RuntimeError(
                f"the worker process fitting the students ended unexpectedly (exit code {self.process.exitcode})"
            ) from error
        if status == "error":
            raised, trace = value
            raise raised from WorkerTraceback(trace)
        return value

    @staticmethod
    def can_fork(distiller: Distiller) -> bool:
        """:return: whether the worker is forked (Linux, students on the CPU): it starts at once, no main guard"""
        on_cpu = all(p.device.type == "cpu" for student in distiller.students.values() for p in student.parameters())
        return sys.platform.startswith("linux") and on_cpu and "fork" in multiprocessing.get_all_start_methods()

    @staticmethod
    def _context(distiller: Distiller) -> BaseContext:
        """
        How the worker starts: forked on Linux with students on the CPU (at once, and a script needs no main
        guard), else from a fork server (CUDA cannot be used in a forked child; a script needs the guard).
        """
        if FitProcess.can_fork(distiller):
            return multiprocessing.get_context("fork")
        if "forkserver" in multiprocessing.get_all_start_methods():
            forkserver = multiprocessing.get_context("forkserver")
            forkserver.set_forkserver_preload([__name__])  # the server imports torch and this package once
            return forkserver
        return multiprocessing.get_context("spawn")

    def submit(
        self, obs: th.Tensor, targets: PolicyOutputs, progress_remaining: float, epochs: int, label_seconds: float
    ) -> PendingFit:
        """
        Fit the students on labelled observations in the worker.

        :param obs: the observations, as :meth:`Distiller.label` returned them (their memory layout travels)
        :param targets: the teacher's outputs for them
        :param progress_remaining: the teacher's remaining progress, for learning-rate schedules
        :param epochs: passes over ``obs``
        :param label_seconds: the seconds the labelling took here (added to the fit's ``time_s``)
        :return: the pending fit (its ``result`` brings the students' new weights back into this process)
        """
        # The weights and optimiser states travel only when they changed here (a fit in the foreground); the
        # generator always does: drawing the next batch here (replay sampling) moves it.
        state = fit_state(self.distiller, with_weights=not self.worker_is_current)
        self.connection.send_bytes(_to_bytes((state, obs, targets, progress_remaining, epochs)))
        return PendingFit(self, label_seconds)

    def state_changed(self) -> None:
        """Say that the students changed in this process (a fit in the foreground): the next job carries them."""
        self.worker_is_current = False

    def close(self) -> None:
        """Stop the worker (after the job in progress)."""
        if self.process.is_alive():
            with contextlib.suppress(OSError):  # already gone
                self.connection.send_bytes(b"")
            self.process.join(timeout=60)
        if self.process.is_alive():  # still writing an answer nobody reads
            self.process.terminate()
            self.process.join()
        self.connection.close()
