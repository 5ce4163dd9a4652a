"""Several small students computed as one network: a minibatch costs a few matrix products, whatever their number.

Small students are cheap in arithmetic but not in calls: each layer, activation and head is a separate
operation, forward and backward, and with three students (a ladder) and a value head each, a minibatch
took some forty of them. The students all read the same observations, so their first layers can be one
``Linear`` (their weights concatenated) and their later layers one block-diagonal ``Linear``: every student's
policy and value chain, all at once.

What the chains read (their features) is computed once for all students:

- ``FlattenExtractor`` (SB3's ``MlpPolicy`` on vectors): the flattened observations, shared by every student;
- :class:`~sb3_distill.architectures.MinAtarCNN` without pooling: each student's 3x3 convolution is a
  ``Linear`` over the observations' 3x3 patches, cut out once per minibatch, so every student's convolution
  is one matrix product over them; each student's feature layer then reads its own channels of the maps,
  laid out as the extractor flattens them. Run as convolutions (concatenated into one, the linear layers
  block-diagonal) the same students took 1.02x the time of one by one; as patch products, a MinAtar ladder's
  update over a rollout takes 0.64-0.73x (``benchmarks/packing.py``).

The distiller packs two or more students (one alone gains nothing: measured 12% slower). A student packs
when each of its chains (``ActorCriticPolicy``: ``mlp_extractor``'s policy and value
networks with ``action_net`` and ``value_net``, discrete actions; ``DQNPolicy``: its ``q_net``) is a sequence
of ``Linear`` layers and element-wise activations on features of one of the extractors above. Chains of the
same shape (depth and activations) form one group. The students keep their own parameters: the packed weights
are rebuilt from them at every pass, so gradients, optimisers and saved files stay each student's own, and the
outputs equal the students' own up to float rounding (``tests/test_packing.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, MlpExtractor
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn
from torch.nn import functional as F

from sb3_distill.architectures import MinAtarCNN
from sb3_distill.outputs import shares_weights

#: Activations applied element by element (packing applies one to every student's units at once).
ELEMENTWISE = (
    nn.Tanh,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Identity,
)


@dataclass
class _Chain:
    """One output of one student: its ``Linear`` layers, with the activation after each but the last."""

    layers: list[nn.Linear]
    activations: list[nn.Module]
    #: the features extractor whose output the first layer reads
    extractor: BaseFeaturesExtractor
    #: reads the features without passing gradients back into the extractor (a critic on the actor's CNN)
    detached: bool = False

    @property
    def signature(self) -> tuple[str, ...]:
        """Chains of the same signature pack into one group."""
        return (str(len(self.layers)), str(self.detached), *(repr(activation) for activation in self.activations))

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features


def _chain(modules: Sequence[nn.Module], extractor: BaseFeaturesExtractor) -> _Chain | None:
    """The chain of ``Linear`` layers and element-wise activations, or ``None`` when the modules are anything else."""
    if not _packable_extractor(extractor):
        return None
    layers: list[nn.Linear] = []
    activations: list[nn.Module] = []
    for module in modules:
        if type(module) is nn.Linear and module.bias is not None:
            if len(layers) > len(activations):  # two Linear layers in a row: their activation is the identity
                activations.append(nn.Identity())
            layers.append(module)
        elif isinstance(module, ELEMENTWISE) and not any(True for _ in module.parameters()):
            if len(activations) >= len(layers) or not layers:
                return None  # two activations in a row, or one before the first layer
            activations.append(module)
        else:
            return None
    if not layers or len(activations) != len(layers) - 1:
        return None  # empty, or ending with an activation
    return _Chain(layers, activations, extractor)


def _packable_extractor(extractor: BaseFeaturesExtractor) -> bool:
    """SB3's ``FlattenExtractor``, or a :class:`MinAtarCNN` without pooling (its convolution as patch products)."""
    if type(extractor) is FlattenExtractor:
        return True
    if type(extractor) is not MinAtarCNN or any(isinstance(module, nn.MaxPool2d) for module in extractor.cnn):
        return False
    conv, _ = _minatar_layers(extractor)
    geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups)
    return geometry == ((3, 3), (1, 1), (0, 0), (1, 1), 1) and conv.bias is not None


def _minatar_layers(extractor: MinAtarCNN) -> tuple[nn.Conv2d, nn.Linear]:
    """:return: the extractor's convolution and linear layer (each followed by a ReLU)"""
    conv, linear = extractor.cnn[0], extractor.linear[0]
    assert isinstance(conv, nn.Conv2d)
    assert isinstance(linear, nn.Linear)
    return conv, linear


def _chains(student: BasePolicy, with_values: bool) -> list[_Chain] | None:
    """``[scores]`` or ``[scores, values]`` chains of a packable student, else ``None``."""
    if type(student) is ActorCriticPolicy:  # PPO's and A2C's "MlpPolicy", not a subclass that may compute otherwise
        if not isinstance(student.action_space, spaces.Discrete) or type(student.mlp_extractor) is not MlpExtractor:
            return None
        mlp = student.mlp_extractor
        found = [_chain([*mlp.policy_net, student.action_net], student.pi_features_extractor)]
        if with_values:
            value_chain = _chain([*mlp.value_net, student.value_net], student.vf_features_extractor)
            if value_chain is not None:  # the value loss stays off the features the actor shares (distiller.py)
                value_chain.detached = shares_weights(student)
            found.append(value_chain)
    elif type(student) is DQNPolicy:  # DQN's "MlpPolicy"
        found = [_chain(list(student.q_net.q_net), student.q_net.features_extractor)]
    else:
        return None
    return None if any(chain is None for chain in found) else found  # type: ignore[return-value]


def _patches(obs: th.Tensor, channels_last: bool) -> th.Tensor:
    """
    :param obs: ``(batch, height, width, channels)`` (or channels first, with ``channels_last=False``)
    :return: the 3x3 patches ``(batch, positions, 9 * channels)``, positions row by row, each patch ordered
        (row, column, channel) as :func:`_patch_weight` orders a convolution's weight
    """
    frames = obs if channels_last else obs.permute(0, 2, 3, 1)
    # A view (batch, rows, columns, 3, 3, channels), then one copy: with the channels innermost it reads the
    # frames in runs (4x faster than with them outermost, measured on MinAtar frames).
    windows = frames.unfold(1, 3, 1).unfold(2, 3, 1).permute(0, 1, 2, 4, 5, 3)
    return windows.reshape(len(frames), windows.shape[1] * windows.shape[2], -1)


def _patch_weight(conv: nn.Conv2d) -> th.Tensor:
    """A 3x3 convolution's weight as a ``Linear`` weight over :func:`_patches`: ``(out_channels, 9 * channels)``."""
    return conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)


def _minatar_features(obs: th.Tensor, extractors: list[MinAtarCNN]) -> list[th.Tensor]:
    """
    The features of several :class:`MinAtarCNN` extractors (no pooling) on the same observations.

    Their convolutions are one ``Linear`` over the patches; the maps are then laid out channel-major, as each
    extractor flattens its convolution's output, so each extractor's linear layer reads its own channels as a
    view (and their gradients come back as one concatenation, not one zero-filled map per extractor).
    """
    layers = [_minatar_layers(extractor) for extractor in extractors]
    convs = [conv for conv, _ in layers]
    weight = th.cat([_patch_weight(conv) for conv in convs])
    biases = [conv.bias for conv in convs if conv.bias is not None]  # all have one (_packable_extractor)
    maps = F.linear(_patches(obs, extractors[0].channels_last), weight, th.cat(biases))  # (batch, positions, channels)
    # channel-major, then the ReLU: its backward pass then runs on contiguous gradients (strided ones: slower)
    channel_major = F.relu(maps.transpose(1, 2).contiguous())
    chunks = channel_major.split([conv.out_channels for conv in convs], dim=1)
    return [F.relu(linear(chunk.flatten(1))) for (_, linear), chunk in zip(layers, chunks, strict=True)]


class PackedStudents:
    """
    Students whose chains run as one network per group of equal shape.

    :param students: name -> student, all built for the same observation space and number of actions
    :param chains: name -> the student's chains (scores, then values when distilled)
    """

    def __init__(self, students: Mapping[str, BasePolicy], chains: Mapping[str, list[_Chain]]) -> None:
        self.names = list(students)
        #: the students whose values are distilled, in the order of :meth:`__call__`'s values
        self.value_names = [name for name in self.names if len(chains[name]) == 2]
        self._first = students[self.names[0]]
        #: the positions of :attr:`value_names` among the students (where their value losses go)
        self.value_index = th.as_tensor(
            [self.names.index(name) for name in self.value_names], dtype=th.long, device=self._first.device
        )
        all_chains = [chain for name in self.names for chain in chains[name]]
        self._flatten = any(type(chain.extractor) is FlattenExtractor for chain in all_chains)
        self._minatar: list[MinAtarCNN] = []
        for chain in all_chains:
            if isinstance(chain.extractor, MinAtarCNN) and not any(chain.extractor is e for e in self._minatar):
                self._minatar.append(chain.extractor)
        # where each chain's features lie in the features of :meth:`_features`: (start, stop)
        width = get_flattened_obs_dim(self._first.observation_space) if self._flatten else 0
        self._flatten_slice = (0, width)
        self._slices, self._width = self._minatar_slices()
        groups: dict[tuple[str, ...], list[tuple[str, int, _Chain]]] = {}
        for name in self.names:
            for index, chain in enumerate(chains[name]):
                groups.setdefault(chain.signature, []).append((name, index, chain))
        self._groups = list(groups.values())

    def _minatar_slices(self) -> tuple[dict[int, tuple[int, int]], int]:
        """:return: each MinAtar extractor's features ``(start, stop)`` by its ``id``, and the features' width"""
        width = self._flatten_slice[1]
        slices = {}
        for extractor in self._minatar:
            slices[id(extractor)] = (width, width + extractor.features_dim)
            width += extractor.features_dim
        return slices, width

    def __setstate__(self, state: dict[str, object]) -> None:
        # Unpickled (fitted in a second process): the extractors are new objects, with new ids.
        self.__dict__.update(state)
        self._slices, self._width = self._minatar_slices()

    @classmethod
    def build(cls, students: Mapping[str, BasePolicy], with_values: Mapping[str, bool]) -> PackedStudents | None:
        """
        :param students: name -> student
        :param with_values: name -> whether its values are distilled
        :return: the packed students, or ``None`` when there is only one (packing a single student's policy and
            value chains costs more than it saves) or one of them does not pack: they are then run one by one
        """
        if len(students) < 2:
            return None
        chains = {}
        for name, student in students.items():
            found = _chains(student, with_values[name])
            if found is None:
                return None
            chains[name] = found
        observation_spaces = {repr(student.observation_space) for student in students.values()}
        n_scores = {found[0].out_features for found in chains.values()}
        normalize = {student.normalize_images for student in students.values()}
        layouts = {
            c.extractor.channels_last for found in chains.values() for c in found if type(c.extractor) is MinAtarCNN
        }
        if len(observation_spaces) != 1 or len(n_scores) != 1 or len(normalize) != 1 or len(layouts) > 1:
            return None
        return cls(students, chains)

    def _features(self, obs: th.Tensor) -> th.Tensor:
        """Every extractor's features side by side ``(batch, width)``: the flattened observations first, if read."""
        preprocessed = preprocess_obs(obs, self._first.observation_space, normalize_images=self._first.normalize_images)
        assert isinstance(preprocessed, th.Tensor)
        parts = [preprocessed.flatten(1)] if self._flatten else []
        if self._minatar:
            parts.extend(_minatar_features(preprocessed, self._minatar))
        return parts[0] if len(parts) == 1 else th.cat(parts, dim=1)

    def _first_weight(self, chain: _Chain) -> th.Tensor:
        """A chain's first weight over all the features (zero where it reads another extractor's)."""
        weight = chain.layers[0].weight
        flatten = type(chain.extractor) is FlattenExtractor
        start, stop = self._flatten_slice if flatten else self._slices[id(chain.extractor)]
        return weight if (start, stop) == (0, self._width) else F.pad(weight, (start, self._width - stop))

    def _run_group(self, features: th.Tensor, chains: list[_Chain]) -> list[th.Tensor]:
        hidden = features
        for depth in range(len(chains[0].layers)):
            layers = [chain.layers[depth] for chain in chains]
            bias = th.cat([layer.bias for layer in layers])
            if depth == 0:  # every chain reads the features (its own part of them): one wide layer
                weight = th.cat([self._first_weight(chain) for chain in chains])
            else:  # each chain reads its own units: block-diagonal
                weight = th.block_diag(*[layer.weight for layer in layers])
            hidden = F.linear(hidden, weight, bias)
            if depth < len(chains[0].activations):
                hidden = chains[0].activations[depth](hidden)
        return list(hidden.split([chain.out_features for chain in chains], dim=1))

    def __call__(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        :param obs: observations, as the students' ``extract_features`` take them
        :return: scores ``(batch, students, actions)`` and values ``(batch, len(value_names))``
        """
        features = self._features(obs)
        outputs: dict[tuple[str, int], th.Tensor] = {}
        for group in self._groups:
            chains = [c for _, _, c in group]
            read = features.detach() if chains[0].detached else features
            for (name, index, _), output in zip(group, self._run_group(read, chains), strict=True):
                outputs[name, index] = output
        scores = th.stack([outputs[name, 0] for name in self.names], dim=1)
        if not self.value_names:
            return scores, features.new_zeros((len(features), 0))
        return scores, th.cat([outputs[name, 1] for name in self.value_names], dim=1)
