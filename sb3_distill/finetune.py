"""Fine-tuning a distilled student with RL: ``to_ppo`` and ``to_dqn`` turn it into an SB3 model that keeps learning.

The model is built by SB3 itself from the student's own policy class and ``policy_kwargs`` (so
``PPO.load`` reads its saves without this package), then takes the student's weights. What the
student learned is kept exactly: the model's greedy actions are the student's.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm, maybe_make_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn
from torch.nn import functional as F

from sb3_distill.normalization import obs_normalization, wrap_env
from sb3_distill.outputs import shares_weights
from sb3_distill.ppd import ProximalPolicyDistillation
from sb3_distill.student_files import constructor_parameters, student_from_payload, student_payload
from sb3_distill.teachers import Teacher

#: What fine-tuning a distilled Q-network with DQN gives, said where it starts.
TO_DQN_WARNING = (
    "to_dqn: fine-tuning a distilled Q-network with DQN is not reliable: its outputs are softmax logits, not "
    "Q-values, and TD targets pull them apart (measured on CartPole: 4-38% of the distilled return left after "
    "50k steps, 5 seeds). Distil with student_algo='ppo' and fine-tune with to_ppo instead."
)
#: Critic-only steps before the policy moves (:class:`FineTunePPO`).
DEFAULT_VALUE_WARMUP_STEPS = 5_000
#: PPO's ``target_kl`` when the user gives none: each rollout's updates stop before the policy moves far.
DEFAULT_TARGET_KL = 0.02
#: Mean probability of the greedy action a discrete student is sharpened to before fine-tuning (:func:`sharpen`).
DEFAULT_GREEDY_PROBABILITY = 0.9
#: Steps per environment the student acts greedily for, to find the observations it is sharpened on.
SHARPEN_STEPS = 256
#: Initial weight of the KL anchor to the distilled student, and the steps over which it fades.
DEFAULT_ANCHOR_COEF = 1.0
DEFAULT_ANCHOR_STEPS = 10_000
#: The rollback guard: the fraction of the starting return below which the policy is rolled back, and the
#: number of deterministic episodes each judgement (and the starting return) is measured over ("auto":
#: :func:`judging_episodes` chooses it from the spread of the student's returns).
DEFAULT_ROLLBACK_BELOW = 0.95
DEFAULT_ROLLBACK_EPISODES = "auto"
#: With ``rollback_episodes="auto"``: the episodes the spread is first measured on, and the most per judgement.
AUTO_MIN_EPISODES = 50
AUTO_MAX_EPISODES = 1_000
#: The environment steps between the guard's judgements.
DEFAULT_EVAL_FREQ = 10_000

#: Constructor arguments of a policy that the algorithm passes itself.
_SPACE_ARGUMENTS = ("observation_space", "action_space", "lr_schedule", "use_sde")


def judging_episodes(
    returns: np.ndarray, rollback_below: float, low: int = AUTO_MIN_EPISODES, high: int = AUTO_MAX_EPISODES
) -> int:
    """
    The episodes per judgement (``rollback_episodes="auto"``) that make the standard error of a mean return
    at most half the band between the starting return and the rollback threshold: ``n >= (2 std / band)**2``
    with ``band = (1 - rollback_below) * |mean|``, from the student's own returns. A policy whose returns
    never vary (CartPole at 500) needs ``low``; one whose returns vary by 90% of their mean (MinAtar
    Breakout), over a thousand: ``high`` is the cap.

    :param returns: the student's deterministic returns, one per episode (two at least)
    :param rollback_below: the guard's fraction of the starting return
    :param low: the fewest episodes
    :param high: the most episodes
    :return: the episodes per judgement
    """
    spread = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    band = (1.0 - rollback_below) * abs(float(np.mean(returns)))
    if spread == 0.0:
        return low
    if band == 0.0:
        return high
    return int(np.clip(math.ceil((2.0 * spread / band) ** 2), low, high))


def _policy_kwargs(student: BasePolicy) -> dict[str, Any]:
    kwargs = constructor_parameters(student)
    return {key: value for key, value in kwargs.items() if key not in _SPACE_ARGUMENTS}


def _student_env(student: BasePolicy, env: VecEnv | gym.Env | str) -> VecEnv | gym.Env | str:
    """The environment, with the ``VecNormalize`` statistics the student recorded (frozen) when there are some."""
    if obs_normalization(student) is None:
        return env
    if not isinstance(env, VecEnv):
        raise TypeError("this student was distilled under VecNormalize: pass a VecEnv built as the teacher's was")
    return wrap_env(env, student)


class FineTunePPO(ProximalPolicyDistillation):
    """
    PPO that fine-tunes a distilled student without throwing away what it learned.

    Three safeguards, each optional, on top of PPO's own loss:

    1. **Value warm-up.** For the first ``value_warmup_steps`` environment steps only the critic learns
       (the value head, and the value network's own layers): the policy, and any features it shares with
       the critic, stay as distilled. A critic distilled from a DQN teacher's ``max_a Q`` values the teacher's
       greedy policy under its discount, not the sampled one under PPO's, and one not distilled knows nothing:
       their advantages would otherwise move the policy at random. ``to_ppo`` gives a critic that shared a
       features extractor with weights (a CNN) a copy of its own (``own_critic_extractor``): PPO's value loss
       then never moves the features the actor acts on (through a shared extractor, it wrecked them).
    2. **A fading KL anchor.** PPO's loss plus ``anchor_coef * w * E[max(r, 1 - clip_range) * KL(anchor || student)]``,
       the Proximal Policy Distillation term (:class:`~sb3_distill.ProximalPolicyDistillation`) with, for
       anchor, the student as it was before fine-tuning or, given a ``teacher``, the teacher itself (PPD
       proper: the student keeps learning from the teacher while its own rewards take over); ``w`` falls
       linearly from 1 to 0 over the ``anchor_steps`` environment steps after the warm-up, after which it is
       plain PPO.
    3. **A rollback guard.** The deterministic policy is judged, as ``EvalCallback`` evaluates it, on
       ``rollback_episodes`` episodes: once before the first update (the student's starting return), then right after an
       update every ``eval_freq`` environment steps, and when ``learn`` returns. When the mean return falls below
       ``rollback_below`` of the starting return (measured on ``|start|``: ``start - (1 - rollback_below) * |start|``),
       the policy and its optimiser go back to the kept weights (all but the critic's own weights, which keep what they
       have learned, so that the next updates' advantages are better informed than the failed ones') and the anchor's
       fade starts again; when it reaches the starting return, the judged weights are kept and an anchor to the student
       moves to them (a teacher anchor stays), so that the policy can keep improving from verified weights; in between,
       PPO goes on from the judged weights but the kept ones stay what ``predict`` acts with. The kept weights are at
       first the student's after the warm-up. A failing update is thus rolled back before it acts again, and ``learn``
       hands over the kept weights only. With ``rollback_episodes="auto"`` (the default) the student first plays 50
       episodes, and the number per judgement is chosen from the spread of their returns (:func:`judging_episodes`: a
       mean's standard error at most half the band between the start and the threshold, 50 to 1000 episodes): where
       returns vary by as much as their mean (MinAtar), 50 episodes cannot tell a 5% drop from luck. Every judgement
       plays the same episodes (the environment is seeded with ``judge_seed`` first): two judgements differ by the
       policy, not by the luck of the draw, and an unchanged policy scores its starting return exactly (in an
       environment that its seed makes deterministic). The judging episodes are played on ``eval_env`` when given (made
       as ``env`` is), otherwise on the training environment itself: its episodes in progress are then cut (the
       environment is reset after judging, and a ``VecNormalize`` in it is frozen while judging). Either way they are
       not training steps: they cost up to ``judge_episodes`` episodes per ``eval_freq`` steps (``rollback_below=None``:
       no guard, no cost). With ``rollback_confirm=True`` the starting return is also measured on a second set of
       ``judge_episodes`` episodes (seeded with ``confirm_seed``), and a judged policy that reaches the threshold plays
       that set too: it is rolled back unless it reaches the threshold there as well (against the start's return on that
       set), and is kept only if it reaches the start on both.

    With the guard, ``predict`` acts with the weights it last kept (:attr:`judged_policy`: the student until
    the first update, then the last judged weights that reached the starting return), so that an
    evaluation during ``learn`` (``EvalCallback``) or a prediction mid-training never meets weights that
    have not been verified. ``policy`` is PPO's candidate, the one it samples its rollouts from and updates;
    when ``learn`` returns it is set to the kept weights, so the two are the same and ``save`` writes them.

    Steps count across ``learn`` calls. ``save`` writes the model as it trains (the candidate ``policy``) in a
    file that SB3's ``PPO.load`` reads; the anchor and the guard's kept and judged weights are not saved:
    ``FineTunePPO.load`` anchors what remains of the fade to the loaded policy and the guard keeps the
    loaded weights as its fallback. A guard that judged on an
    ``eval_env`` needs one again: ``FineTunePPO.load(path, env, eval_env=...)``; a model anchored to a teacher
    needs its teacher again (:meth:`set_teacher`) before it learns on while the anchor has weight.

    :param policy: the policy class (the student's)
    :param env: the environment
    :param teacher: anchor to this teacher (model, zip path or RL-Zoo run folder) rather than to the
        starting student (``None``)
    :param value_warmup_steps: environment steps of critic-only updates (at least)
    :param anchor_coef: weight of the KL anchor at its start (0: no anchor)
    :param anchor_steps: environment steps over which the anchor fades to 0
    :param rollback_below: the fraction of the starting return the guard keeps the policy above
        (``None``: no guard)
    :param rollback_episodes: episodes per judgement, and for the starting return (``"auto"``: chosen from
        the spread of the student's returns, :func:`judging_episodes`)
    :param rollback_confirm: a policy that passes a judgement must pass again on a second set of episodes
    :param eval_env: the environment the guard judges on (``None``: the training environment)
    :param eval_freq: environment steps between the guard's judgements
    :param ppo_kwargs: ``PPO``'s arguments
    """

    def __init__(
        self,
        policy: Any,
        env: Any,
        teacher: BaseAlgorithm | str | os.PathLike[str] | None = None,
        value_warmup_steps: int = DEFAULT_VALUE_WARMUP_STEPS,
        anchor_coef: float = DEFAULT_ANCHOR_COEF,
        anchor_steps: int = DEFAULT_ANCHOR_STEPS,
        rollback_below: float | None = DEFAULT_ROLLBACK_BELOW,
        rollback_episodes: int | str = DEFAULT_ROLLBACK_EPISODES,
        rollback_confirm: bool = False,
        eval_env: VecEnv | gym.Env | str | None = None,
        eval_freq: int = DEFAULT_EVAL_FREQ,
        **ppo_kwargs: Any,
    ) -> None:
        for name, value in (("value_warmup_steps", value_warmup_steps), ("anchor_steps", anchor_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative number of environment steps, got {value!r}")
        if isinstance(eval_freq, bool) or not isinstance(eval_freq, int) or eval_freq < 1:
            raise ValueError(f"eval_freq must be a positive number of environment steps, got {eval_freq!r}")
        if eval_env is not None and rollback_below is None:
            raise ValueError("eval_env is what the rollback guard judges on: it needs rollback_below (not None)")
        #: the environment the guard judges the deterministic policy on (``None``: the training environment)
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        #: whether the guard judges on ``eval_env`` (saved: a loaded model needs one again)
        self.judges_on_eval_env = eval_env is not None
        if not (isinstance(anchor_coef, int | float) and anchor_coef >= 0 and math.isfinite(anchor_coef)):
            raise ValueError(f"anchor_coef must be a finite number >= 0, got {anchor_coef!r}")
        if rollback_below is not None and not (isinstance(rollback_below, int | float) and 0 < rollback_below <= 1):
            raise ValueError(f"rollback_below must be in (0, 1] or None, got {rollback_below!r}")
        if rollback_episodes != "auto" and (
            isinstance(rollback_episodes, bool) or not isinstance(rollback_episodes, int) or rollback_episodes < 1
        ):
            raise ValueError(
                f"rollback_episodes must be a positive number of episodes or 'auto', got {rollback_episodes!r}"
            )
        if not isinstance(rollback_confirm, bool):
            raise ValueError(f"rollback_confirm must be True or False, got {rollback_confirm!r}")
        if rollback_confirm and rollback_below is None:
            raise ValueError(
                "rollback_confirm confirms the rollback guard's passes: it needs rollback_below (not None)"
            )
        #: whether the anchor is a teacher (``True``) or the student as it was before fine-tuning
        self.anchors_to_teacher = teacher is not None
        super().__init__(policy, env, teacher=teacher, **ppo_kwargs)
        self.value_warmup_steps = value_warmup_steps
        self.anchor_coef = float(anchor_coef)
        self.anchor_steps = anchor_steps
        self.rollback_below = rollback_below
        self.rollback_episodes = rollback_episodes
        #: the episodes each judgement plays (``None`` until ``"auto"`` has chosen them, at the start)
        self.judge_episodes: int | None = rollback_episodes if isinstance(rollback_episodes, int) else None
        self.rollback_confirm = rollback_confirm
        #: environment steps fine-tuned so far, across ``learn`` calls
        self.finetune_steps = 0
        #: the step the warm-up ended at (``None``: still warming up); the anchor fades from here, or from a rollback
        self.anchor_start: int | None = None
        #: the student's starting return (its deterministic policy's, before any update; ``None`` until measured)
        self.start_return: float | None = None
        #: how many times the guard has rolled the policy back
        self.rollbacks = 0
        #: ``finetune_steps`` at the guard's last judgement, and the number of judgements so far
        self.last_judgement = 0
        self.judgements = 0
        #: the environment seed of every judgement's episodes (drawn from ``seed``)
        self.judge_seed, self.confirm_seed = (
            int(s) for s in np.random.default_rng(self.seed).integers(2**31 - 1, size=2)
        )
        #: with ``rollback_confirm``, the starting return on the confirmation episodes
        self.start_confirm_return: float | None = None
        #: with ``rollback_confirm``, how many passes the confirmation episodes overturned
        self.overturned = 0
        self.value_optimizer: th.optim.Optimizer | None = None
        #: the guard's fallback: the weights (and optimiser state) last judged at or above the starting return
        self.kept_state: dict[str, Any] | None = None
        #: the policy ``predict`` acts with while the guard is on: the weights it last kept (``None``: ``policy``)
        self.judged_policy: BasePolicy | None = None
        #: whether a rollback leaves the critic's own weights (:func:`critic_parameters`) as they have learned
        #: since; ``False``: the critic goes back with the actor
        self.rollback_keeps_critic = True

    def _excluded_save_params(self) -> list[str]:
        # A plain RolloutBuffer for PPO.load; the critic's own optimiser is rebuilt if needed.
        excluded = ["rollout_buffer_class", "value_optimizer", "kept_state", "judged_policy"]
        return [*super()._excluded_save_params(), *excluded, "eval_env"]

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.eval_env is not None and not isinstance(self.eval_env, VecEnv):  # also after load(eval_env=...)
            self.eval_env = self._wrap_env(maybe_make_env(self.eval_env, self.verbose), self.verbose)

    def learn(  # type: ignore[override]
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> FineTunePPO:
        if self.judges_on_eval_env and self.eval_env is None:
            raise ValueError(
                "this model's rollback guard judged on an eval_env: pass one again "
                "(FineTunePPO.load(path, env, eval_env=...), or set model.eval_env)"
            )
        super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
        self._judge_now(1)  # judge the last update too
        if self.rollback_below is not None and self.kept_state is not None:  # hand over the kept weights
            self._restore(self.kept_state)
        return self

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        The action of the weights the rollback guard last kept (:attr:`judged_policy`), or of ``policy``
        without a guard; as ``PPO.predict`` otherwise.
        """
        policy = self.policy if self.judged_policy is None else self.judged_policy
        return policy.predict(observation, state, episode_start, deterministic)

    def _serve(self, policy_state: dict[str, th.Tensor]) -> None:
        """Make ``policy_state`` the weights ``predict`` acts with."""
        if self.judged_policy is None:
            self.judged_policy = copy.deepcopy(self.policy)
            self.judged_policy.set_training_mode(False)
            self.judged_policy.requires_grad_(False)
        self.judged_policy.load_state_dict(policy_state)

    def _judge_now(self, every: int) -> None:
        """Judge the policy as it is now if ``every`` steps have passed since the last judgement."""
        if self.rollback_below is None or self.kept_state is None or self.finetune_steps - self.last_judgement < every:
            return
        mean_return = self.evaluate_deterministic()
        confirm_return = None
        if self.rollback_confirm and mean_return >= self.rollback_threshold():
            confirm_return = self.evaluate_deterministic(confirm=True)
        self._judge(mean_return, self._state(), confirm_return)

    def evaluate_deterministic(self, confirm: bool = False) -> float:
        """
        The deterministic policy's mean return over ``judge_episodes`` episodes, always the same ones (the
        environment seeded with ``judge_seed``, or ``confirm_seed`` for the confirmation episodes), on ``eval_env``
        or, without one, on the training environment (its episodes in progress are cut: it is reset afterwards
        with a new seed, and a ``VecNormalize`` in it does not update its statistics meanwhile).

        :param confirm: play the confirmation episodes (not counted as a judgement)
        :return: the mean return
        """
        assert self.judge_episodes is not None, "the starting return chooses the episodes: call train() first"
        if not confirm:
            self.judgements += 1
        return float(np.mean(self.episode_returns(self.judge_episodes, confirm)))

    def episode_returns(self, episodes: int, confirm: bool = False) -> np.ndarray:
        """
        The deterministic policy's returns on ``episodes`` episodes of the environment seeded as for a
        judgement, as :meth:`evaluate_deterministic` plays them.

        :param episodes: how many episodes
        :param confirm: the confirmation episodes
        :return: one return per episode
        """
        env = self.env if self.eval_env is None else self.eval_env
        assert isinstance(env, VecEnv)
        normalize = unwrap_vec_normalize(env)
        training = normalize is not None and normalize.training
        if normalize is not None:
            normalize.training = False
        try:
            env.seed(self.confirm_seed if confirm else self.judge_seed)  # the same episodes at every judgement
            returns, _ = evaluate_policy(self.policy, env, episodes, deterministic=True, return_episode_rewards=True)
            if self.eval_env is None:  # training resumes on new episodes, seeded anew
                stream = [self.confirm_seed if confirm else self.judge_seed, self.judgements]
                env.seed(int(np.random.default_rng(stream).integers(2**31 - 1)))
                self._last_obs = env.reset()  # type: ignore[assignment]
                self._last_episode_starts = np.ones((env.num_envs,), dtype=bool)
                if normalize is not None:
                    self._last_original_obs = normalize.get_original_obs()
        finally:
            if normalize is not None:
                normalize.training = training
        return np.asarray(returns, dtype=np.float64)

    def anchor_weight(self) -> float:
        """:return: the weight of the KL anchor for the next update (0 during the warm-up and after the fade)"""
        if self.anchor_start is None or self.anchor_coef == 0:
            return 0.0
        since = self.finetune_steps - self.anchor_start
        return self.anchor_coef * (1.0 - since / self.anchor_steps) if since < self.anchor_steps else 0.0

    def _lambda_now(self) -> float:
        return self.anchor_weight()

    def set_anchor(self) -> None:
        """Anchor to the policy as it is now (when the model is made, and after ``load``); a teacher anchor stays."""
        if self.anchors_to_teacher:
            if self.teacher is None:
                raise ValueError(
                    "this model is anchored to a teacher, which is not saved with it: call set_teacher(teacher) "
                    "after load, before learning on"
                )
            return
        payload = student_payload(self.policy)
        anchor = student_from_payload({**payload, "data": copy.deepcopy(payload["data"])}, device=self.device)
        anchor.set_training_mode(False)
        anchor.requires_grad_(False)
        self.teacher = Teacher(anchor)

    def train(self) -> None:
        if self.rollback_below is not None and self.start_return is None:
            self._measure_start()  # the policy has not moved yet
            if self.rollback_confirm:
                self.start_confirm_return = self.evaluate_deterministic(confirm=True)
        if self.anchor_start is None and self.finetune_steps >= self.value_warmup_steps:
            self.anchor_start = self.finetune_steps
        if self.anchor_start is None:
            self._train_value()
        else:
            if self.rollback_below is not None and self.kept_state is None:  # first update (or after load)
                self.kept_state = self._state()
                self._serve(self.kept_state["policy"])
                self.last_judgement = self.finetune_steps
            if self.anchor_weight() > 0:
                if self.teacher is None:
                    self.set_anchor()
                super().train()
            else:
                PPO.train(self)
        self.finetune_steps += self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
        self.logger.record("finetune/anchor_weight", self.anchor_weight())
        self._judge_now(self.eval_freq)  # the updated weights, before they act

    def _measure_start(self) -> None:
        """The starting return, on ``judge_episodes`` episodes (chosen first from the student's spread if "auto")."""
        assert self.rollback_below is not None
        if self.judge_episodes is None:
            returns = self.episode_returns(AUTO_MIN_EPISODES)
            self.judge_episodes = judging_episodes(returns, self.rollback_below)
            if self.verbose >= 1:
                print(
                    f"FineTunePPO: the student's returns {np.mean(returns):.3g} +- {np.std(returns):.3g}: "
                    f"{self.judge_episodes} episodes per judgement"
                )
            if self.judge_episodes == AUTO_MIN_EPISODES:  # the episodes just played are the judging ones
                self.judgements += 1
                self.start_return = float(np.mean(returns))
        if self.start_return is None:
            self.start_return = self.evaluate_deterministic()
        self.logger.record("finetune/start_return", self.start_return)
        self.logger.record("finetune/judge_episodes", self.judge_episodes)

    def rollback_threshold(self, confirm: bool = False) -> float:
        """
        :param confirm: on the confirmation episodes (``rollback_confirm``)
        :return: the mean deterministic return below which the guard rolls back
        """
        assert self.rollback_below is not None
        start = self.start_confirm_return if confirm else self.start_return
        assert start is not None
        return start - (1.0 - self.rollback_below) * abs(start)

    def _judge(self, mean_return: float, judged: dict[str, Any], confirm_return: float | None = None) -> None:
        """
        Roll back to the kept weights when ``mean_return`` is below the threshold; keep ``judged`` (act with
        it, and anchor to it) when it reaches the starting return; in between, let PPO go on from ``judged``
        while ``predict`` acts with the kept weights.

        :param mean_return: the judged weights' mean return
        :param judged: the weights (and optimiser state) that played it
        :param confirm_return: their mean return on the confirmation episodes, where they were played: the
            threshold and the start must be reached there too
        """
        assert self.start_return is not None
        assert self.kept_state is not None
        self.logger.record("finetune/judged_return", mean_return)
        self.last_judgement = self.finetune_steps
        overturned = confirm_return is not None and confirm_return < self.rollback_threshold(confirm=True)
        if overturned:
            self.overturned += 1
            self.logger.record("finetune/overturned", self.overturned)
        if mean_return < self.rollback_threshold() or overturned:
            self._restore(self.kept_state)
            self.anchor_start = self.finetune_steps  # move cautiously again from the kept weights
            self.rollbacks += 1
            self.logger.record("finetune/rollbacks", self.rollbacks)
            if self.verbose >= 1:
                print(
                    f"FineTunePPO: deterministic return {mean_return:.3g} fell below {self.rollback_threshold():.3g} "
                    f"(start {self.start_return:.3g}): rolled back"
                )
            return
        confirmed = confirm_return is None or (
            self.start_confirm_return is not None and confirm_return >= self.start_confirm_return
        )
        if mean_return >= self.start_return and confirmed:
            # the judged weights played at least as well as the student: keep them, act with them, anchor to them
            self.kept_state = judged
            self._serve(judged["policy"])
            if not self.anchors_to_teacher:
                if self.teacher is None:
                    self.set_anchor()
                assert self.teacher is not None
                self.teacher.policy.load_state_dict(judged["policy"])

    def _restore(self, state: dict[str, Any]) -> None:
        """
        Put the policy and its optimiser back to ``state``, the weights ``predict`` acts with; with
        ``rollback_keeps_critic``, the critic's own weights (:func:`critic_parameters`) keep what they have
        learned since: the critic does not act, and put back with the actor it would give the next updates
        the same poor advantages that moved the rolled-back ones.
        """
        critic = critic_parameters(self.policy) if self.rollback_keeps_critic else []
        learned = [
            (parameter.detach().clone(), copy.deepcopy(self.policy.optimizer.state.get(parameter)))
            for parameter in critic
        ]
        self.policy.load_state_dict(state["policy"])
        self.policy.optimizer.load_state_dict(state["optimizer"])
        with th.no_grad():
            for parameter, (value, optimizer_state) in zip(critic, learned, strict=True):
                parameter.copy_(value)
                if optimizer_state is None:
                    self.policy.optimizer.state.pop(parameter, None)
                else:
                    self.policy.optimizer.state[parameter] = optimizer_state
        self._serve(state["policy"])

    def _state(self) -> dict[str, Any]:
        return copy.deepcopy({"policy": self.policy.state_dict(), "optimizer": self.policy.optimizer.state_dict()})

    def _train_value(self) -> None:
        """Critic-only updates on the rollout, with the critic's own Adam: the policy does not move."""
        parameters = critic_parameters(self.policy)
        if self.value_optimizer is None:
            self.value_optimizer = th.optim.Adam(parameters, lr=self.lr_schedule(1.0))
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.value_optimizer)
        value_losses = []
        for _ in range(self.n_epochs):
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                values = self.policy.predict_values(rollout_data.observations).flatten()
                value_loss = F.mse_loss(rollout_data.returns, values)
                self.value_optimizer.zero_grad()
                value_loss.backward()
                th.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
                self.value_optimizer.step()
                value_losses.append(value_loss.item())
        self.policy.optimizer.zero_grad()  # gradients that reached layers shared with the policy are dropped
        self.logger.record("train/value_loss", float(np.mean(value_losses)))
        self.logger.record(
            "train/explained_variance",
            explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()),
        )


def critic_parameters(policy: ActorCriticPolicy) -> list[nn.Parameter]:
    """
    The parameters that only the critic uses: the value head, the value network's layers and, when the
    critic has its own, its features extractor.

    :param policy: an actor-critic policy
    :return: the parameters
    """
    modules: list[nn.Module] = [policy.mlp_extractor.value_net, policy.value_net]
    if not policy.share_features_extractor:
        modules.append(policy.vf_features_extractor)
    return [parameter for module in modules for parameter in module.parameters()]


def greedy_observations(policy: BasePolicy, env: VecEnv, n_steps: int) -> th.Tensor:
    """
    Observations met by a policy acting greedily (its distilled behaviour), in the form its network takes.

    :param policy: the policy
    :param env: the environment (reset first; the model resets it again when it starts learning)
    :param n_steps: steps per environment
    :return: ``(n_steps * n_envs, *obs_shape)`` observations on the policy's device
    """
    observations = []
    obs = env.reset()
    for _ in range(n_steps):
        observations.append(obs)
        actions, _ = policy.predict(obs, deterministic=True)  # type: ignore[arg-type]
        obs, _, _, _ = env.step(actions)
    return th.as_tensor(np.concatenate(observations), device=policy.device)  # type: ignore[arg-type]


def sharpen(policy: ActorCriticPolicy, observations: th.Tensor, greedy_probability: float) -> float:
    """
    Scale a categorical policy's logits so that its greedy action has on average ``greedy_probability`` on
    ``observations``: the greedy actions are unchanged, the sampled ones follow them more often.

    A distilled student often has the teacher's greedy actions but much softer probabilities (a DQN
    teacher's softened Q-values, or an unconverged KL); PPO samples from them, so fine-tuning would start
    from behaviour far worse than the student's greedy one. Logits are only ever scaled up.

    :param policy: an actor-critic policy with a ``Discrete`` action space (its ``action_net`` is linear)
    :param observations: observations the policy meets
    :param greedy_probability: the target mean probability of the greedy action, in (0, 1)
    :return: the scale applied (1.0: already as sharp)
    """
    with th.no_grad():
        features = BasePolicy.extract_features(policy, observations, policy.pi_features_extractor)
        action_net = policy.action_net
        assert isinstance(action_net, nn.Linear)
        logits = action_net(policy.mlp_extractor.forward_actor(features))

        def greedy_mass(scale: float) -> float:
            return float(th.softmax(scale * logits, dim=-1).max(dim=-1).values.mean())

        low, high = 1.0, 1.0
        if greedy_mass(low) >= greedy_probability:
            return 1.0
        while greedy_mass(high) < greedy_probability and high < 1e4:
            low, high = high, high * 2
        for _ in range(30):
            middle = (low + high) / 2
            low, high = (middle, high) if greedy_mass(middle) < greedy_probability else (low, middle)
        action_net.weight.mul_(high)
        action_net.bias.mul_(high)
    return high


def to_ppo(
    student: BasePolicy,
    env: VecEnv | gym.Env | str,
    teacher: BaseAlgorithm | str | os.PathLike[str] | None = None,
    greedy_probability: float | None = DEFAULT_GREEDY_PROBABILITY,
    value_warmup_steps: int = DEFAULT_VALUE_WARMUP_STEPS,
    anchor_coef: float = DEFAULT_ANCHOR_COEF,
    anchor_steps: int = DEFAULT_ANCHOR_STEPS,
    rollback_below: float | None = DEFAULT_ROLLBACK_BELOW,
    rollback_episodes: int | str = DEFAULT_ROLLBACK_EPISODES,
    rollback_confirm: bool = False,
    eval_env: VecEnv | gym.Env | str | None = None,
    eval_freq: int = DEFAULT_EVAL_FREQ,
    own_critic_extractor: bool = True,
    **ppo_kwargs: Any,
) -> FineTunePPO:
    """
    A PPO model whose policy is the student, ready to ``learn`` like any PPO model, safeguarded
    (:class:`FineTunePPO`) so that fine-tuning keeps what distillation taught: sharpened logits, a critic-only
    warm-up, ``target_kl=0.02`` unless ``ppo_kwargs`` give one, a fading KL anchor to the student and a
    rollback guard. ``greedy_probability=None, value_warmup_steps=0, anchor_coef=0, rollback_below=None,
    target_kl=None`` is plain PPO from the student's weights. Measured choices: the README's "fine-tuning"
    figures, ``benchmarks/finetune.py``.

    :param student: an actor-critic student (``ActorCriticPolicy`` family)
    :param env: the environment, made as the teacher's was (a ``VecNormalize`` the student recorded is re-applied)
    :param teacher: the teacher the student was distilled from (model, zip path or RL-Zoo run folder): the KL
        anchor pulls towards it instead of the starting student (Proximal Policy Distillation while the anchor
        fades), so that a student distilled short of its teacher keeps closing the gap as it fine-tunes
    :param greedy_probability: discrete actions: sharpen the student (:func:`sharpen`) until its greedy action
        has this mean probability on the states it visits, so that PPO's sampled actions start from the
        distilled behaviour (``None``: leave the probabilities as distilled)
    :param value_warmup_steps: environment steps of critic-only updates first
    :param anchor_coef: initial weight of the KL anchor to the distilled student (0: none)
    :param anchor_steps: environment steps over which the anchor fades out
    :param rollback_below: roll the policy back when its deterministic mean return, judged every
        ``eval_freq`` steps and when ``learn`` returns, falls below this fraction of the student's starting
        return (``None``: no guard)
    :param rollback_episodes: episodes per judgement of the guard, and for the starting return (``"auto"``:
        chosen from the spread of the student's returns, 50 to 1000, :func:`judging_episodes`)
    :param rollback_confirm: a policy that passes a judgement plays a second set of ``rollback_episodes``
        episodes and must pass there too (against the start's return on that set)
    :param eval_env: the environment the guard judges on, made as ``env`` is (a ``VecNormalize`` the student
        recorded is re-applied); ``None``: the training environment, whose episodes in progress are cut
    :param eval_freq: environment steps between the guard's judgements
    :param own_critic_extractor: a student whose actor and critic share a features extractor with weights (a
        CNN) fine-tunes with a copy of it for the critic (``share_features_extractor=False``), so that the value
        loss does not move the features the actor acts on (``False``: PPO's shared extractor, as distilled)
    :param ppo_kwargs: any ``PPO`` argument (``learning_rate``, ``n_steps``, ``seed``, ``verbose`` ...);
        ``policy_kwargs`` cannot be given: they are the student's
    :return: the model; its ``save`` is read by ``PPO.load``
    """
    if not isinstance(student, ActorCriticPolicy):
        raise TypeError(
            f"to_ppo needs an actor-critic student (ActorCriticPolicy family), got {type(student).__name__}: "
            f"distil with student_algo='ppo' (student 'MlpPolicy' or 'CnnPolicy' is then PPO's actor-critic, "
            f"whatever the teacher), then fine-tune with to_ppo"
        )
    if greedy_probability is not None and not 0 < greedy_probability < 1:
        raise ValueError(f"greedy_probability must be in (0, 1) or None, got {greedy_probability!r}")
    model = _with_student(
        FineTunePPO,
        student,
        env,
        {
            "teacher": teacher,
            "value_warmup_steps": value_warmup_steps,
            "anchor_coef": anchor_coef,
            "anchor_steps": anchor_steps,
            "rollback_below": rollback_below,
            "rollback_episodes": rollback_episodes,
            "rollback_confirm": rollback_confirm,
            "eval_env": None if eval_env is None else _student_env(student, eval_env),
            "eval_freq": eval_freq,
            "target_kl": DEFAULT_TARGET_KL,
            **ppo_kwargs,
        },
        {"share_features_extractor": False} if own_critic_extractor and shares_weights(student) else {},
    )
    if greedy_probability is not None and isinstance(model.action_space, spaces.Discrete):
        observations = greedy_observations(model.policy, model.get_env(), SHARPEN_STEPS)  # type: ignore[arg-type]
        scale = sharpen(model.policy, observations, greedy_probability)
        if model.verbose >= 1:
            print(f"to_ppo: the student's logits scaled by {scale:.3g} (greedy probability {greedy_probability})")
    model.set_anchor()
    return model


def to_dqn(student: BasePolicy, env: VecEnv | gym.Env | str, **dqn_kwargs: Any) -> DQN:
    """
    A DQN model whose online and target Q-networks are the student's, ready to ``learn``.

    Exploration defaults to a constant 5% (``exploration_initial_eps=exploration_final_eps=0.05``) rather
    than DQN's 100% start, which would throw the distilled behaviour away; pass them to change it.

    Not reliable, and it warns so: a student distilled by KL has the teacher's greedy actions, but its
    outputs are softmax logits (Q-values over the temperature, plus any per-state constant), not Q-values,
    and DQN's TD targets pull them apart. Measured (RL-Zoo's published DQN CartPole agent, 5 seeds,
    RL-Zoo's DQN settings, 50k steps): students at 462 / 49 / 54 / 500 / 174 fell to 4-38% of their
    return; regressing Q-values (``loss="mse"``) gave students near random (10-20). Distil with
    ``student_algo="ppo"`` and fine-tune with :func:`to_ppo` instead.

    :param student: a Q-network student (``DQNPolicy`` family)
    :param env: the environment, made as the teacher's was
    :param dqn_kwargs: any ``DQN`` argument; ``policy_kwargs`` are the student's
    :return: the DQN model
    """
    if not isinstance(student, DQNPolicy):
        raise TypeError(
            f"to_dqn needs a Q-network student (DQNPolicy family), got {type(student).__name__}: distil with "
            f"student_algo='dqn' (student 'MlpPolicy' or 'CnnPolicy' is then DQN's Q-network), then to_dqn"
        )
    warnings.warn(TO_DQN_WARNING, UserWarning, stacklevel=2)
    dqn_kwargs = {"exploration_initial_eps": 0.05, "exploration_final_eps": 0.05, **dqn_kwargs}
    model = _with_student(DQN, student, env, dqn_kwargs)
    model.policy.q_net_target.load_state_dict(model.policy.q_net.state_dict())
    return model


def _with_student(
    algorithm: type[Any],
    student: BasePolicy,
    env: Any,
    kwargs: dict[str, Any],
    policy_kwargs: dict[str, Any] | None = None,
) -> Any:
    if "policy_kwargs" in kwargs:
        raise TypeError("policy_kwargs are the student's: build the student with the architecture you want instead")
    if getattr(student, "use_sde", False):
        kwargs = {"use_sde": True, **kwargs}
    policy_kwargs = {**_policy_kwargs(student), **(policy_kwargs or {})}
    model = algorithm(type(student), _student_env(student, env), policy_kwargs=policy_kwargs, **kwargs)
    if model.policy.observation_space != student.observation_space or model.action_space != student.action_space:
        raise ValueError(
            f"the environment gives {model.policy.observation_space} -> {model.action_space}, but the student "
            f"acts on {student.observation_space} -> {student.action_space}"
        )
    model.policy.load_state_dict(student.state_dict())
    return model
