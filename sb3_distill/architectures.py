"""Ready student networks: features extractors sized to a fraction of the usual teachers.

Use them as ``student_kwargs={"features_extractor_class": SmallCNN, "net_arch": []}`` with
``"CnnPolicy"`` (Atari) or ``"MlpPolicy"`` (:class:`MinAtarCNN`); they are also importable from
:mod:`sb3_distill.students`, and by dotted name from YAML files (``sb3_distill.students.SmallCNN``).
"""

from __future__ import annotations

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class SmallCNN(BaseFeaturesExtractor):
    """
    The Nature-CNN layout (8x8/4, 4x4/2, 3x3/1 convolutions, then one linear layer) with fewer channels.

    With the defaults, a PPO ``CnnPolicy`` student on 84x84x4 Atari frames has about 1.7-1.9% of
    the acting parameters of SB3's Nature-CNN teacher (about 31k against 1.69M with 6 actions).

    :param observation_space: channel-first image space, as SB3's policies see it
    :param channels: output channels of the three convolutions
    :param features_dim: size of the output features
    """

    def __init__(
        self, observation_space: spaces.Box, channels: tuple[int, int, int] = (8, 16, 16), features_dim: int = 32
    ) -> None:
        super().__init__(observation_space, features_dim)
        n_input_channels = observation_space.shape[0]
        c1, c2, c3 = channels
        self.cnn = nn.Sequential(
            nn.Conv2d(n_input_channels, c1, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(c2, c3, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with th.no_grad():
            n_flatten = self.cnn(th.zeros((1, *observation_space.shape))).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


class MinAtarCNN(BaseFeaturesExtractor):
    """
    The MinAtar network (Young & Tian, 2019: one 3x3 convolution, then one linear layer), with a size knob.

    MinAtar frames are 10x10xC binary arrays, channel-last, which SB3 does not treat as images
    (they are not uint8): this extractor takes them as they come and moves the channels first.
    With ``channels=16, features_dim=128`` it is the paper's DQN torso; the defaults make a student.

    :param observation_space: ``Box`` of shape ``(height, width, channels)``
        (or channel-first, with ``channels_last=False``)
    :param channels: output channels of the convolution
    :param features_dim: size of the output features
    :param channels_last: whether observations are ``(height, width, channels)``, as MinAtar gives them
    :param pool: kernel (and stride) of a max-pooling after the convolution (1: none, the paper's network). With
        ``pool=2`` the linear layer reads a quarter of the positions, so the same parameters buy more channels
        and features (compared in ``benchmarks/student_architectures.py``)
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        channels: int = 8,
        features_dim: int = 16,
        channels_last: bool = True,
        pool: int = 1,
    ) -> None:
        super().__init__(observation_space, features_dim)
        if len(observation_space.shape) != 3:
            raise ValueError(f"MinAtarCNN expects 3-d observations (height, width, channels), got {observation_space}")
        if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
            raise ValueError(f"pool must be a positive integer (1: no pooling), got {pool!r}")
        self.channels_last = channels_last
        n_input_channels = observation_space.shape[-1 if channels_last else 0]
        height, width = observation_space.shape[:2] if channels_last else observation_space.shape[1:]
        if pool > min(height, width) - 2:
            raise ValueError(
                f"pool={pool} is larger than the convolution's {height - 2}x{width - 2} output "
                f"(observations {observation_space.shape})"
            )
        layers: list[nn.Module] = [nn.Conv2d(n_input_channels, channels, kernel_size=3, stride=1), nn.ReLU()]
        if pool > 1:
            layers.append(nn.MaxPool2d(pool))
        self.cnn = nn.Sequential(*layers, nn.Flatten())
        with th.no_grad():
            n_flatten = self.cnn(self._channels_first(th.zeros((1, *observation_space.shape)))).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def _channels_first(self, observations: th.Tensor) -> th.Tensor:
        return observations.permute(0, 3, 1, 2) if self.channels_last else observations

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(self._channels_first(observations.float())))
