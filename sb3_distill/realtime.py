"""Real-time policy distillation (Sun & Fazli, 2019): an SB3 callback that distils while the teacher trains.

After every teacher update the callback hands the observations the teacher has just collected to
the :class:`~sb3_distill.distiller.Distiller`: on-policy teachers (PPO, A2C) give their rollouts,
off-policy teachers (DQN, QR-DQN, SAC, TD3) a sample of their replay buffer. The callback reads SB3's buffers by
indexing their arrays with its own generator; it never calls ``rollout_buffer.get()`` or
``replay_buffer.sample()``, which draw from the global NumPy generator the teacher trains with.
"""

from __future__ import annotations

import copy
import inspect
import os
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

from sb3_distill.distiller import DistillConfig, Distiller, acting_optimizer, check_positive
from sb3_distill.fit_process import FitProcess, PendingFit
from sb3_distill.internals import n_updates
from sb3_distill.normalization import obs_normalization_of
from sb3_distill.offline import DEFAULT_BUFFER_SIZE, OfflineDistillation
from sb3_distill.serialization import PathLike, atomic_torch_save, check_save_path, torch_load
from sb3_distill.sources import ObservationSource, TargetMemory, source_for
from sb3_distill.student_files import (
    FILE_FORMAT_KEY,
    FILE_FORMAT_VERSION,
    save_student,
    student_from_payload,
    student_payload,
)
from sb3_distill.students import SINGLE_STUDENT, StudentSpec, make_students, student_specs
from sb3_distill.teachers import Teacher, teacher_env
from sb3_distill.zoo_runs import current_zoo_run, zoo_env_maker

#: observations per step of the catch-up distillation (labelled, or fitted, at a time)
CATCH_UP_CHUNK = 16_384

#: options of the student-driven finish that the callback sets itself (the rest may go in ``finish_kwargs``)
FINISH_FIXED = ("teacher", "student", "env", "collect", "student_kwargs", "student_algo", "seed", "device")


class RealTimeDistillCallback(BaseCallback):
    """
    Distil a PPO, A2C, DQN, QR-DQN, SAC or TD3 teacher into small students while it trains.

    After each teacher update, the students learn from the observations the teacher has just
    collected: the whole rollout for PPO/A2C (``epochs`` passes), or ``epochs`` samples per new
    transition from the replay buffer for DQN. Distillation waits until at least ``distill_freq``
    new observations have arrived, so that short rollouts (A2C's 5 steps) are grouped. The
    teacher trains exactly as it would without the callback: same seed, same weights, bit for bit.
    For on-policy teachers with discrete actions the targets are the logits the teacher computed to act
    during the rollout (recorded, with the rollout buffer's values), so no second teacher pass is needed;
    other teachers label the batch when it is distilled.

    By default (``background=True``) the students' gradient steps run beside the teacher while it collects its
    next rollout: in a second process where one can be forked (Linux, students on the CPU), else in a second
    thread: the teacher is read (labelled) only in the training thread, each distillation
    starts after the previous one has finished, in the same order, on the same private generators, so the
    students end exactly as they would in the foreground. Students whose update draws random numbers (dropout,
    say: checked on the first distillation) stay in the foreground, so that the teacher's generators never move.

    Metrics go to the teacher's logger: ``distill/loss``, ``distill/agreement`` (fraction of
    greedy actions shared with the teacher, during the last epoch), ``distill/compression`` (acting
    parameters of student / teacher), ``distill/time_s`` (seconds of the last distillation),
    ``distill/skipped_updates`` (non-finite losses), ``distill/learning_rate``, and
    ``distill/value_loss`` when values are distilled. With several students each logs under ``distill/<name>/``.

    :param student: the student: an alias of the teacher's policy family (``"MlpPolicy"``,
        ``"CnnPolicy"``), an SB3 policy class, a policy instance built for the teacher's spaces, or a
        ``torch.nn.Module`` mapping preprocessed observations to one output per action. Several
        students: a dict name -> spec, where a spec may also be a tuple ``(alias or class, policy_kwargs)``.
    :param student_kwargs: ``policy_kwargs`` for an alias or class student (``net_arch``, ...)
    :param student_algo: the algorithm whose policy aliases ``student`` names (``"ppo"``: ``"MlpPolicy"`` is an
        actor-critic, ready for :func:`~sb3_distill.to_ppo`, even from a DQN teacher); ``None``: the teacher's
    :param loss: ``"kl"`` (default; KL between Gaussians for continuous PPO/A2C), ``"mse"`` (the default
        for SAC and TD3, whose deterministic actions are distilled) or ``"nll"``
    :param temperature: softens the teacher's scores in the KL loss (default 0.01 for DQN's
        Q-values, 1.0 for actor-critic logits)
    :param learning_rate: the students' learning rate, a float or a schedule of the teacher's progress
    :param epochs: passes over each rollout (on-policy) or samples per new transition (off-policy)
    :param batch_size: minibatch size of the student updates
    :param distill_value: also distil the teacher's state values into the student's value head (an
        actor-critic's value, or a DQN or QR-DQN teacher's ``max_a Q``), so that the student fine-tunes with PPO
        from a critic (``None``: when teacher and student are actor-critics, and for a Q-value teacher's
        actor-critic student with a CNN, which then gets a critic CNN of its own:
        :class:`~sb3_distill.distiller.DistillConfig`)
    :param vf_coef: weight of the value loss
    :param max_grad_norm: clip the students' gradient norm (``None``: no clipping)
    :param distill_freq: minimum number of new observations between two distillations (``None``: ``batch_size``);
        off-policy, one distillation holds ``epochs * distill_freq`` sampled observations in memory
    :param catch_up: keep the last ``catch_up`` observations the students learned from (in the observation
        space's dtype: Atari frames stay uint8) and, when training ends, have the final teacher label them again
        and fit the students on them for ``epochs`` more passes. Students distilled in real time follow a moving
        teacher and forget its older states; this ends them on the teacher that is saved, at no environment step
        (the teacher is only read). Memory: ``catch_up`` observations (100k MinAtar frames: 60 MB; 100k Atari
        frames: 2.8 GB). Off-policy, these are the replay samples last distilled, drawn from the whole buffer.
        ``0``: off. Not kept in checkpoints: after a resume it holds what came since
    :param finish_steps: when training ends (after the catch-up), each student drives ``finish_env`` for
        ``finish_steps`` steps and learns from the final teacher's labels of the states it visits: student-driven
        offline distillation (:class:`~sb3_distill.OfflineDistillation`, ``collect="student"``), on a copy of the
        student with a fresh optimiser whose weights it then takes. Real time teaches the teacher's states; this
        shows the student where its own mistakes lead (``benchmarks/students_vs_teacher.py --finish``). The
        teacher is only read. ``0``: off
    :param finish_env: the environment of the finish, made as the teacher's was (same id, wrappers, frame stack)
        but not the teacher's own (stepping that would change the teacher's continuation): a ``VecEnv``, a
        ``gym.Env`` or a gym id. Under VecNormalize it takes the final teacher's statistics, frozen. ``None``:
        under RL-Zoo's ``train``, one more environment of the run, made as RL-Zoo makes its evaluation
        environment; elsewhere an error when training starts
    :param finish_kwargs: other options of the finish, as :class:`~sb3_distill.OfflineDistillation` takes them
        (``epochs``, ``buffer_size``, ``exploration_rate``...). By default it distils as the callback does (``loss``,
        ``temperature``, ``batch_size``, value distillation, gradient clipping) at the callback's initial
        learning rate, with the offline defaults for the rest
    :param save_path: folder where each student is saved when training ends, as ``{name_prefix}.zip``
        (several students: ``{name_prefix}_{name}.zip``). ``None``: nowhere, except under RL-Zoo's
        ``train``, where students go to the run's folder next to the teacher, as ``{env}_student.zip``
    :param name_prefix: file name stem of the saved students (default ``"student"``, or
        ``"{env}_student"`` in an RL-Zoo run)
    :param seed: seed of the students' initialisation and of the callback's private generators
        (``None``: derived from the teacher's ``seed`` when it has one, else fresh entropy)
    :param background: fit the students beside the teacher while it goes on (same result; ``students``,
        ``save`` and the end of training wait for it): ``True``, in a second process when it can be forked
        (Linux, students on the CPU; :mod:`~sb3_distill.fit_process`: no interpreter lock
        shared with the teacher), else in a thread; ``"process"`` or ``"thread"`` to choose; ``False``: in the
        training loop
    :param verbose: 1 prints a line when distillation starts and when students are saved
    """

    def __init__(
        self,
        student: StudentSpec | Mapping[str, Any],
        student_kwargs: dict[str, Any] | None = None,
        student_algo: str | type[BaseAlgorithm] | None = None,
        loss: str | None = None,
        temperature: float | None = None,
        learning_rate: float | Schedule = 1e-3,
        epochs: int = 2,
        batch_size: int = 128,
        distill_value: bool | None = None,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = None,
        distill_freq: int | None = None,
        catch_up: int = 0,
        finish_steps: int = 0,
        finish_env: VecEnv | gym.Env | str | None = None,
        finish_kwargs: dict[str, Any] | None = None,
        save_path: PathLike | None = None,
        name_prefix: str | None = None,
        seed: int | None = None,
        background: bool | str = True,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose=verbose)
        if background not in (True, False, "thread", "process"):
            raise ValueError(f"background must be True, False, 'thread' or 'process', got {background!r}")
        self.config = DistillConfig(
            loss=loss,
            temperature=temperature,
            learning_rate=learning_rate,
            batch_size=batch_size,
            epochs=epochs,
            distill_value=distill_value,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
        )
        if distill_freq is not None:
            check_positive("distill_freq", distill_freq, integer=True)
        self.distill_freq = batch_size if distill_freq is None else distill_freq
        check_positive("catch_up", catch_up, integer=True, allow_zero=True)
        self.catch_up = catch_up
        #: the last ``catch_up`` observations distilled, relabelled by the final teacher when training ends
        self.memory: TargetMemory | None = None
        #: the metrics of the last distillation logged (what :meth:`distill` returns), kept after the logger dumps
        self.last_metrics: dict[str, Any] | None = None
        self._caught_up_at: int | None = None
        check_positive("finish_steps", finish_steps, integer=True, allow_zero=True)
        self.finish_steps = finish_steps
        self.finish_env = finish_env
        self.finish_kwargs = check_finish_kwargs(finish_kwargs)
        if finish_steps == 0 and (finish_env is not None or finish_kwargs):
            raise ValueError("finish_env and finish_kwargs only apply with finish_steps > 0")
        options = self._finish_options()
        one_update = max(options["batch_size"], options.get("train_freq") or 0)
        if 0 < finish_steps < one_update:
            raise ValueError(
                f"finish_steps={finish_steps} is fewer steps than one update of the finish ({one_update}: its "
                f"batch_size and train_freq)"
            )
        #: the environment of the finish (``finish_env`` as the teacher's policy sees it), made when training starts
        self.finish_venv: VecEnv | None = None
        self._finish_seed: int | None = None
        self._finished_at: int | None = None
        self.save_path = save_path
        self.name_prefix = name_prefix
        self.seed = seed
        self.background = background
        self._specs = student_specs(student, student_kwargs, student_algo)
        self._student_paths: dict[str, Path] = {}
        self._saved_at: int | None = None
        self.distiller: Distiller | None = None
        self._source: ObservationSource | None = None
        self._updates_seen: int | None = None
        self._resume_state: dict[str, Any] | None = None
        self.n_distillations = 0
        self._total_timesteps: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._fit_process: FitProcess | None = None
        #: the distillation not yet logged: its metrics (a future), number and the teacher's normalisation then
        self._pending: tuple[Future[dict[str, Any]] | PendingFit, int, dict[str, Any] | None] | None = None

    # -- students ------------------------------------------------------------------------------

    @property
    def students(self) -> dict[str, BasePolicy]:
        """The students, by name (built when the teacher's training starts; waits for a background update)."""
        if self.distiller is not None:
            self._finish_distillation()
            return self.distiller.students
        if all(isinstance(spec, BasePolicy) for spec, _ in self._specs.values()):  # given ready, or loaded
            return {name: spec for name, (spec, _) in self._specs.items()}  # type: ignore[misc]
        raise RuntimeError("the students are built when training starts: call teacher.learn(..., callback=this)")

    @property
    def student(self) -> BasePolicy:
        """The student (when a single one was given)."""
        students = self.students
        if len(students) != 1:
            raise AttributeError(f"this callback distils several students {sorted(students)}: use .students[name]")
        return next(iter(students.values()))

    # -- SB3 hooks -----------------------------------------------------------------------------

    def make_students(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        policy_aliases: Mapping[str, type[BasePolicy]],
        seed: int | None = None,
        device: th.device | str = "cpu",
        teacher_policy: BasePolicy | None = None,
    ) -> dict[str, BasePolicy]:
        """
        Build this callback's students for a teacher's spaces (training does it; this is for checks).

        :param observation_space: the teacher policy's observation space
        :param action_space: the teacher's action space
        :param policy_aliases: the teacher algorithm's policy aliases
        :param seed: seed of the initialisation
        :param device: where the students live
        :param teacher_policy: the teacher's policy, whose settings students of its family inherit
        :return: the students, by name
        """
        return make_students(
            self._specs,
            observation_space,
            action_space,
            policy_aliases,
            learning_rate=self.config.learning_rate_at(1.0),
            seed=seed,
            device=device,
            teacher_policy=teacher_policy,
            distill_value=self.config.distill_value,
        )

    def _init_callback(self) -> None:
        if self.distiller is None:
            # No seed given: follow the teacher's, so that a seeded run (RL-Zoo's --seed) is reproducible.
            seed = self.seed if self.seed is not None else self.model.seed
            distiller_seed, students_seed, finish_seed = np.random.SeedSequence(seed).generate_state(3)
            self._finish_seed = int(finish_seed)
            self.distiller = Distiller.for_teacher(
                self.model, self._specs, self.config, int(students_seed), int(distiller_seed)
            )
            if self._resume_state is not None:
                self.distiller.load_state_dict(self._resume_state)
                self._resume_state = None
        else:  # the same callback on a new or continuing teacher: keep the students, if the teacher fits them
            self.distiller.set_teacher(Teacher(self.model))
        if self._source is None or getattr(self._source, "model", None) is not self.model:
            self._source = source_for(self.model, self.distiller.teacher.kind)  # type: ignore[arg-type]
        self._updates_seen = n_updates(self.model)
        self._student_paths = self._resolve_student_paths()
        if self.catch_up > 0 and self.memory is None:
            self.memory = self._make_memory()
        if self.finish_steps > 0 and self.finish_venv is None:
            self.finish_venv = self._make_finish_env()
        self._start_fit_process()
        if self.verbose >= 1:
            for name, compression in self.distiller.compression.items():
                teacher_name = type(self.model).__name__
                print(f"Distilling {teacher_name} into {name!r}: {compression:.2%} of the teacher's acting parameters")

    def _forks_by_default(self) -> bool:
        """
        ``background=True``: a forked process wherever one can be forked (Linux, students on the CPU). It shares
        no interpreter lock with the teacher, and what it adds to each fit (the batch there, the students' state
        back) costs less than a thread's contention, for on-policy and replay teachers alike
        (``benchmarks/overhead.py``).
        """
        assert self.distiller is not None
        return FitProcess.can_fork(self.distiller)

    def _start_fit_process(self) -> None:
        """Start the worker process if the students are fitted in one (now: what cannot go fails before any step)."""
        assert self.distiller is not None
        if self._fit_process is not None:
            self._fit_process.close()
            self._fit_process = None
        if self.background == "process":
            self._fit_process = FitProcess(self.distiller)
        elif self.background is True and self._forks_by_default():
            try:
                self._fit_process = FitProcess(self.distiller)
            except ValueError as error:  # the same students, fitted in a thread instead
                warnings.warn(f"{error}: the students are fitted in a thread", stacklevel=2)

    def _on_training_start(self) -> None:
        # learn()'s own arguments (SB3 passes its locals): the budget, previous steps included when resuming.
        self._total_timesteps = int(self.locals["total_timesteps"])

    def _progress_remaining(self) -> float:
        """The teacher's remaining progress, 1 to 0, as SB3 computes it for its own schedules."""
        if self._total_timesteps is None:  # distil() forced before training started
            return 1.0
        return 1.0 - self.model.num_timesteps / self._total_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        assert self._source is not None
        self._source.on_rollout_end()
        self._finish_distillation(block=False)  # logged with this rollout when done, else later

    def _on_rollout_start(self) -> None:
        self._maybe_distill(self.distill_freq)
        assert self._source is not None
        self._source.on_rollout_start()

    def _on_training_end(self) -> None:
        if self._source is None:  # training failed before it started (RL-Zoo still calls this hook)
            return
        self._source.on_training_end()
        self._maybe_distill(1)
        self._finish_distillation()
        self.catch_up_distill()
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        if self._fit_process is not None:
            self._fit_process.close()
            self._fit_process = None
        self.finish_distill()
        self.save_students()

    def _maybe_distill(self, min_new: int) -> None:
        """Distil if the teacher has updated since the last distillation and enough data is new."""
        assert self._source is not None
        if n_updates(self.model) == self._updates_seen:
            self._source.on_teacher_idle()
            return
        if self._source.n_new < min_new:
            return
        self._updates_seen = n_updates(self.model)
        self._start_distillation(bool(self.background))

    def distill(self) -> dict[str, Any]:
        """
        Run one distillation on the observations collected since the last one, and log it.

        Called by the training loop; call it yourself only to force a distillation (it runs in the foreground).

        :return: the distiller's metrics
        """
        self._start_distillation(background=False)
        metrics = self._finish_distillation()
        assert metrics is not None
        return metrics

    def _start_distillation(self, background: bool) -> None:
        """
        Take the new observations, have the teacher label them in this thread, and fit the students on them:
        beside the teacher (a thread or a process) when allowed, else here. The previous one is finished first.
        """
        distiller = self.distiller
        assert distiller is not None
        assert self._source is not None
        self._finish_distillation()
        obs, epochs, targets = self._source.take(self.config.epochs, distiller.rng)
        if self.memory is not None:
            self.memory.add(obs)
        obs_tensor = th.as_tensor(obs, device=distiller.teacher.device)
        progress_remaining = self._progress_remaining()
        self.n_distillations += 1
        normalization = obs_normalization_of(self.model.get_vec_normalize_env())
        future: Future[dict[str, Any]] | PendingFit
        if background and distiller.draws_random is False:
            start_time = time.perf_counter()
            obs_tensor, labelled = distiller.label(obs_tensor, targets)
            label_seconds = time.perf_counter() - start_time
            if self._fit_process is not None:
                future = self._fit_process.submit(obs_tensor, labelled, progress_remaining, epochs, label_seconds)
            else:

                def fit() -> dict[str, Any]:
                    start_time = time.perf_counter()
                    metrics = distiller.fit(obs_tensor, labelled, progress_remaining, epochs)
                    return distiller.with_time(metrics, label_seconds + time.perf_counter() - start_time)

                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sb3-distill")
                future = self._executor.submit(fit)
        else:
            future = Future()
            future.set_result(distiller.update(obs_tensor, progress_remaining, epochs=epochs, targets=targets))
            if self._fit_process is not None:
                self._fit_process.state_changed()
        self._pending = (future, self.n_distillations, normalization)

    def _make_memory(self) -> TargetMemory:
        """The catch-up memory, in the teacher's observation dtype unless ``VecNormalize`` makes them floats."""
        assert self.distiller is not None
        vec_normalize = self.model.get_vec_normalize_env()
        normalized = vec_normalize is not None and vec_normalize.norm_obs
        return self.distiller.target_memory(self.catch_up, dtype=np.float32 if normalized else None)

    def catch_up_distill(self) -> dict[str, Any] | None:
        """
        Fit the students on the catch-up memory labelled by the teacher as it is now (done when training ends).

        The memory is labelled in chunks, then visited ``epochs`` times in a fresh random order, a chunk of
        ``CATCH_UP_CHUNK`` observations at a time (so that Atari frames are made floats a chunk at a time).

        :return: the metrics of the last chunk (``time_s``: the whole catch-up), or ``None`` when the memory is empty
        """
        memory, distiller = self.memory, self.distiller
        if memory is None or distiller is None or len(memory) == 0 or self._caught_up_at == self.n_distillations:
            return None  # nothing kept, or nothing new since the last catch-up (RL-Zoo ends training twice)
        self._finish_distillation()
        start_time = time.perf_counter()
        device = distiller.teacher.device
        n_obs = len(memory)
        for begin in range(0, n_obs, CATCH_UP_CHUNK):
            rows = np.arange(begin, min(begin + CATCH_UP_CHUNK, n_obs))
            memory.set_targets(rows, distiller.label(memory.get(rows, device)[0])[1])
        progress_remaining = self._progress_remaining()
        metrics: dict[str, Any] = {}
        for _ in range(self.config.epochs):
            order = distiller.rng.permutation(n_obs)
            for begin in range(0, n_obs, CATCH_UP_CHUNK):
                obs, targets = memory.get(order[begin : begin + CATCH_UP_CHUNK], device)
                metrics = distiller.update(obs, progress_remaining, epochs=1, targets=targets)
        if self._fit_process is not None:
            self._fit_process.state_changed()
        metrics["time_s"] = time.perf_counter() - start_time
        self._caught_up_at = self._record_end_step(metrics)
        if self.verbose >= 1:
            print(f"Caught up on the final teacher: {n_obs} observations, {metrics['time_s']:.1f} s")
        return metrics

    def _record_end_step(self, metrics: dict[str, Any]) -> int:
        """Log a step of the end of training (catch-up, finish) as one more distillation; :return: its number"""
        assert self.distiller is not None
        self.n_distillations += 1
        self.distiller.record(self.logger, metrics, self.n_distillations)
        self.last_metrics = metrics
        return self.n_distillations

    def _make_finish_env(self) -> VecEnv:
        """The finish's environment, checked against the teacher before its first step."""
        env = self.finish_env
        if env is None:
            make_env = zoo_env_maker()
            if make_env is None:
                raise ValueError(
                    f"finish_steps={self.finish_steps} needs finish_env: an environment of its own, made as the "
                    f"teacher's was (same id, wrappers, frame stack)"
                )
            env = make_env()
        teacher_venv = self.model.get_env()
        if isinstance(env, VecEnv) and teacher_venv is not None and env.unwrapped is teacher_venv.unwrapped:
            raise ValueError(
                "finish_env is the teacher's own environment: stepping it would change the teacher's continuation; "
                "make another one the same way"
            )
        assert env is not None
        return teacher_env(self.model, None, env, seed=self._finish_seed)

    def _finish_options(self) -> dict[str, Any]:
        """The finish's options: the callback's way of distilling, then ``finish_kwargs``."""
        config = self.config
        options = {
            "loss": config.loss,
            "temperature": config.temperature,
            "learning_rate": config.learning_rate_at(1.0),
            "batch_size": config.batch_size,
            "distill_value": config.distill_value,
            "vf_coef": config.vf_coef,
            "max_grad_norm": config.max_grad_norm,
            "buffer_size": max(1, min(DEFAULT_BUFFER_SIZE, self.finish_steps)),  # no memory beyond what it visits
        }
        return {**options, **self.finish_kwargs}

    def finish_distill(self) -> dict[str, Any] | None:
        """
        Each student drives ``finish_env`` for ``finish_steps`` steps, learning from the teacher as it is now.

        Done when training ends, after the catch-up. Each student runs as a copy with a fresh optimiser (as if it
        were loaded from its file), on its own seed, then takes the copy's weights; the teacher is only read.

        :return: the metrics (``time_s``: the whole finish; per student, ``finish_ep_rew_mean``: its mean return
            while it drove), or ``None`` when off or when nothing is new since the last finish
        """
        distiller, venv = self.distiller, self.finish_venv
        if distiller is None or venv is None or self._finished_at == self.n_distillations:
            return None  # off, or already done (RL-Zoo ends training twice)
        self._finish_distillation()
        start_time = time.perf_counter()
        teacher_normalization = self.model.get_vec_normalize_env()
        finish_normalization = unwrap_vec_normalize(venv)
        if teacher_normalization is not None and finish_normalization is not None:  # the final teacher's statistics
            finish_normalization.obs_rms = copy.deepcopy(teacher_normalization.obs_rms)
            finish_normalization.training = False
        seeds = np.random.SeedSequence(self._finish_seed).generate_state(len(distiller.students))
        per_student: dict[str, dict[str, Any]] = {}
        shared: dict[str, Any] = {}  # the last run's learning rate and teacher metrics
        for (name, student), seed in zip(distiller.students.items(), seeds, strict=True):
            finisher = copy.deepcopy(student)
            acting_optimizer(finisher).state.clear()
            run = OfflineDistillation(
                self.model,
                finisher,
                venv,
                collect="student",
                seed=int(seed),
                device=distiller.teacher.device,
                **self._finish_options(),
            )
            run.learn(self.finish_steps)
            student.load_state_dict(finisher.state_dict())
            assert run.last_metrics is not None  # finish_steps covers one update at least (checked when made)
            shared = run.last_metrics
            per_student[name] = dict(next(iter(shared["students"].values())))
            if run.collector.episode_returns:
                per_student[name]["finish_ep_rew_mean"] = float(np.mean(run.collector.episode_returns))
        metrics = {**shared, "students": per_student, "time_s": time.perf_counter() - start_time}
        self._finished_at = self._record_end_step(metrics)
        if self.verbose >= 1:
            print(
                f"Finished the students on their own states: {self.finish_steps} steps each, {metrics['time_s']:.1f} s"
            )
        return metrics

    def _finish_distillation(self, block: bool = True) -> dict[str, Any] | None:
        """
        Wait for the pending distillation (``block=False``: only if it is done), then log it.

        :return: its metrics, or ``None`` when none was pending (or it is still running)
        """
        if self._pending is None or (not block and not self._pending[0].done()):
            return None
        future, index, normalization = self._pending
        self._pending = None
        metrics = future.result()  # an error raised in the background (thread or process) is raised here
        assert self.distiller is not None
        self.distiller.set_obs_normalization(normalization)
        if self.distiller.record(self.logger, metrics, index) and self._fit_process is not None:
            self._fit_process.state_changed()  # a collapsed student re-initialised here: the worker needs it
        self.last_metrics = metrics
        return metrics

    # -- saving --------------------------------------------------------------------------------

    def _resolve_student_paths(self) -> dict[str, Path]:
        """Where ``save_students`` writes; checked (folder created) before the teacher's first step."""
        folder, prefix = self.save_path, self.name_prefix
        if folder is None:
            run = current_zoo_run()
            if run is None:
                return {}
            folder, prefix = run.save_path, prefix or f"{run.env_name}_student"
        prefix = prefix or "student"
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise OSError(f"cannot create the students' folder save_path={str(folder)!r}: {error}") from error
        if list(self._specs) == [SINGLE_STUDENT]:
            paths = {SINGLE_STUDENT: Path(folder) / f"{prefix}.zip"}
        else:
            paths = {name: Path(folder) / f"{prefix}_{name}.zip" for name in self._specs}
        for path in paths.values():
            check_save_path(path)  # a folder that exists but cannot be written fails here, not when training ends
        return paths

    def save_students(self) -> dict[str, Path]:
        """
        Save each student to its file under ``save_path`` (done when training ends).

        :return: the files written, by student name (empty when there is nowhere to save)
        """
        if self.distiller is None:
            return {}
        self._finish_distillation()
        paths = self._student_paths
        if self._saved_at == self.n_distillations:  # nothing new (RL-Zoo calls on_training_end twice)
            return paths
        self._saved_at = self.n_distillations
        for name, path in paths.items():
            student = self.distiller.students[name]
            save_student(student, path)
            if self.verbose >= 1:
                print(f"Saved student {name!r} to {path}")
        return paths

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path: PathLike) -> None:
        """
        Save the students, their optimisers and the callback's state, atomically, to resume later.

        ``load_student(path)`` also reads a student straight from this file.

        :param path: destination file
        """
        distiller = self.distiller
        if distiller is None:
            raise RuntimeError("nothing to save yet: the students are built when training starts")
        self._finish_distillation()
        checkpoint = {
            FILE_FORMAT_KEY: {"version": FILE_FORMAT_VERSION, "kind": "realtime_checkpoint"},
            "students": {name: student_payload(s) for name, s in distiller.students.items()},
            "distiller": distiller.state_dict(),
            "config": self.config.to_dict(),
            "callback": {
                "distill_freq": self.distill_freq,
                "catch_up": self.catch_up,
                "finish_steps": self.finish_steps,
                "finish_kwargs": self.finish_kwargs,
                "save_path": None if self.save_path is None else str(self.save_path),
                "name_prefix": self.name_prefix,
                "seed": self.seed,
                "background": self.background,
                "n_distillations": self.n_distillations,
                "single": list(self._specs) == [SINGLE_STUDENT],
            },
        }
        atomic_torch_save(checkpoint, path)

    @classmethod
    def load(cls, path: PathLike, verbose: int = 0, **overrides: Any) -> RealTimeDistillCallback:
        """
        A callback that continues from a checkpoint written by :meth:`save`.

        Pass it to the (reloaded) teacher's ``learn``: the students, their optimiser states and the
        private generators continue where they were.

        :param path: the checkpoint
        :param verbose: verbosity of the new callback
        :param overrides: options to change (``learning_rate``, ``epochs``, ...)
        :return: the callback
        """
        saved = torch_load(path)
        meta = saved.get(FILE_FORMAT_KEY) if isinstance(saved, Mapping) else None
        if not isinstance(meta, Mapping) or meta.get("kind") != "realtime_checkpoint":
            raise ValueError(f"{str(path)!r} is not a checkpoint written by RealTimeDistillCallback.save")
        students = {name: student_from_payload(payload, device="cpu") for name, payload in saved["students"].items()}
        options = {**DistillConfig.from_dict(saved["config"]).__dict__}
        callback_state = saved["callback"]
        options.update(distill_freq=callback_state["distill_freq"], seed=callback_state["seed"])
        options.update(catch_up=callback_state.get("catch_up", 0))
        options.update(finish_steps=callback_state.get("finish_steps", 0))
        options.update(finish_kwargs=callback_state.get("finish_kwargs") or None)
        options.update(background=callback_state.get("background", True))
        options.update(save_path=callback_state.get("save_path"), name_prefix=callback_state.get("name_prefix"))
        options.update(overrides)
        student: Any = students[SINGLE_STUDENT] if callback_state["single"] else students
        callback = cls(student=student, verbose=verbose, **options)
        callback._resume_state = saved["distiller"]
        callback.n_distillations = callback_state["n_distillations"]
        return callback


def check_finish_kwargs(finish_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    :param finish_kwargs: options of the student-driven finish
    :return: them, checked against :class:`~sb3_distill.OfflineDistillation`'s (a misspelt one fails here)
    """
    options = dict(finish_kwargs or {})
    accepted = set(inspect.signature(OfflineDistillation.__init__).parameters) - {"self", *FINISH_FIXED}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"finish_kwargs {unknown} are not options of the finish; it takes {sorted(accepted)}")
    return options
