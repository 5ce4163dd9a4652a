"""Deployable students: one file (ONNX or TorchScript) that maps raw observations to actions, without SB3.

The exported network does what ``student.predict(obs, deterministic=True)`` does around the policy:
the ``VecNormalize`` statistics the student recorded (if any), the channel-last to channel-first
transposition of images, SB3's preprocessing (uint8 scaling, float conversion), then the greedy action
(discrete), the Gaussian mean clipped to the action bounds (PPO/A2C) or the squashed action rescaled to
the bounds (SAC/TD3).

.. code-block:: python

    import onnxruntime
    session = onnxruntime.InferenceSession("student.onnx")
    actions = session.run(["actions"], {"obs": obs})[0]    # obs: a batch, as the env wrappers give it
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from sb3_distill.normalization import obs_normalization
from sb3_distill.outputs import is_supported_policy, policy_outputs, scaled_actions
from sb3_distill.serialization import PathLike, atomic_target
from sb3_distill.student_files import load_student, student_from_payload, student_payload

#: The formats :func:`export` writes.
FORMATS = ("onnx", "torchscript")


class ExportedPolicy(nn.Module):
    """
    A student with its observation handling, as one ``torch.nn.Module``: raw observations -> actions (, scores).

    :param student: the student (copied to the CPU, in eval mode)
    :param channels_last: the observations are images ``(height, width, channels)``, as most environments
        (and SB3's Atari wrappers) give them, while the policy takes them channel-first
    :param with_scores: also return the action scores (logits, Q-values, Gaussian means or actions)
    """

    obs_mean: th.Tensor
    obs_scale: th.Tensor
    action_low: th.Tensor
    action_high: th.Tensor

    def __init__(self, student: BasePolicy, channels_last: bool, with_scores: bool = False) -> None:
        super().__init__()
        # A fresh copy from the student's own payload (a deep copy would trip on tensors that SB3's
        # distributions keep from the last forward pass).
        # The payload of a module student holds the user's live module: copy it, never touch theirs.
        payload = student_payload(student)
        self.policy = student_from_payload({**payload, "data": copy.deepcopy(payload["data"])}, device="cpu")
        self.policy.set_training_mode(False)
        self.policy.requires_grad_(False)
        self.channels_last = channels_last
        self.with_scores = with_scores
        stats = obs_normalization(student)
        self.normalize = stats is not None
        if stats is not None:
            self.register_buffer("obs_mean", th.as_tensor(stats["mean"], dtype=th.float32))
            self.register_buffer("obs_scale", th.as_tensor(np.sqrt(stats["var"] + stats["epsilon"]), dtype=th.float32))
            self.clip_obs = float(stats["clip_obs"])
        action_space = student.action_space
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.squashed = isinstance(self.policy, SACPolicy | TD3Policy)
        if isinstance(action_space, spaces.Box):
            self.register_buffer("action_low", th.as_tensor(action_space.low, dtype=th.float32))
            self.register_buffer("action_high", th.as_tensor(action_space.high, dtype=th.float32))

    def forward(self, obs: th.Tensor) -> th.Tensor | tuple[th.Tensor, th.Tensor]:
        x = obs.float()
        if self.normalize:  # VecNormalize's observation transform, frozen
            x = th.clamp((x - self.obs_mean) / self.obs_scale, -self.clip_obs, self.clip_obs)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        scores = policy_outputs(self.policy, x, with_values=False).scores  # SB3's preprocess_obs happens inside
        if self.discrete:
            actions = scores.argmax(dim=-1)
        elif self.squashed:  # tanh actions in [-1, 1], rescaled to the bounds as SB3's unscale_action does
            scores = scaled_actions(self.policy, scores)
            actions = self.action_low + 0.5 * (scores + 1.0) * (self.action_high - self.action_low)
        else:
            actions = th.maximum(th.minimum(scores, self.action_high), self.action_low)
        return (actions, scores) if self.with_scores else actions


def _observation_shape(student: BasePolicy, channels_last: bool) -> tuple[int, ...]:
    shape = tuple(int(n) for n in student.observation_space.shape or ())
    return (*shape[1:], shape[0]) if channels_last else shape


def export(
    student: BasePolicy | PathLike,
    path: PathLike,
    format: str = "onnx",
    with_scores: bool = False,
    channels_last: bool | None = None,
    name: str | None = None,
) -> Path:
    """
    Write a student as a self-contained ONNX or TorchScript file, atomically.

    Input ``obs``: a batch of raw observations as the environment wrappers give them (before
    ``VecNormalize``; images channel-last), in the observation space's dtype. Outputs: ``actions``
    (int64 for discrete actions, float32 otherwise), and ``scores`` with ``with_scores=True``.

    :param student: a student, or a student file / checkpoint (see :func:`~sb3_distill.load_student`)
    :param path: the file to write; its folder must exist
    :param format: ``"onnx"`` (needs the ``onnx`` package; run it with ``onnxruntime``) or ``"torchscript"``
        (``torch.jit.load``)
    :param with_scores: also output the action scores
    :param channels_last: whether image observations come channel-last (``None``: yes for image spaces,
        which SB3 transposed for the policy, as for Atari)
    :param name: which student of a checkpoint that holds several
    :return: the path written
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: expected one of {list(FORMATS)}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot export to {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    if not isinstance(student, BasePolicy):
        student = load_student(student, name=name, device="cpu")
    if not is_supported_policy(student):
        raise TypeError(
            f"cannot export a {type(student).__name__}: expected an actor-critic, SAC/TD3, DQN/QR-DQN policy "
            f"or a ModuleStudent"
        )
    space = student.observation_space
    if not isinstance(space, spaces.Box):
        raise TypeError(f"export supports Box observations, not {space}")
    if channels_last is None:
        channels_last = len(space.shape) == 3 and is_image_space(space, check_channels=False)
    module = ExportedPolicy(student, channels_last, with_scores)
    example = th.as_tensor(np.stack([space.sample() for _ in range(2)]))
    if channels_last:
        example = example.permute(0, 2, 3, 1).contiguous()
    assert example.shape[1:] == _observation_shape(student, channels_last)
    outputs = ["actions", "scores"] if with_scores else ["actions"]
    with atomic_target(path) as temporary, th.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        if format == "onnx":
            try:
                import onnx  # noqa: F401  (the exporter needs it)
            except ImportError as error:
                raise ImportError("ONNX export needs the onnx package: pip install onnx onnxruntime") from error
            th.onnx.export(
                module,
                (example,),
                str(temporary),
                input_names=["obs"],
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in ["obs", *outputs]},
                dynamo=False,  # the TorchScript-based exporter: fast, and enough for these feed-forward networks
            )
        else:
            th.jit.save(th.jit.trace(module, (example,)), str(temporary))
    return path
