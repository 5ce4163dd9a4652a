"""Several MLP students computed as one network: a minibatch costs a few matrix products, whatever their number.

Small students are cheap in arithmetic but not in calls: each layer, activation and head is a separate
operation, forward and backward, and with three students (a ladder) and a value head each, a minibatch
took some forty of them. The students all read the same observations, so their first layers can be one
``Linear`` (their weights concatenated) and their later layers one block-diagonal ``Linear``: every student's
policy and value chain, all at once.

The distiller packs two or more students (one alone gains nothing: measured 12% slower). A student packs
when each of its chains (``ActorCriticPolicy``: ``mlp_extractor``'s policy and value
networks with ``action_net`` and ``value_net``, discrete actions; ``DQNPolicy``: its ``q_net``) is a sequence
of ``Linear`` layers and element-wise activations on SB3's flattened observation (convolutional students do
not pack: three ``MinAtarCNN`` students run with their convolutions concatenated into one, and their linear
layers block-diagonal, took 1.02x the time of one by one, median of 7 alternations, 1024 observations, 4
epochs: their updates are bound by the convolutions' arithmetic, not by the number of calls). Chains of the
same shape (depth and activations) form one group. The students keep their own parameters: the packed weights are
rebuilt from them at every pass, so gradients, optimisers and saved files stay each student's own, and the
outputs equal the students' own up to float rounding (``tests/test_packing.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, MlpExtractor
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn
from torch.nn import functional as F

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

    @property
    def signature(self) -> tuple[str, ...]:
        """Chains of the same signature pack into one group."""
        return (str(len(self.layers)), *(repr(activation) for activation in self.activations))

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features


def _chain(modules: Sequence[nn.Module]) -> _Chain | None:
    """The chain of ``Linear`` layers and element-wise activations, or ``None`` when the modules are anything else."""
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
    return _Chain(layers, activations)


def _chains(student: BasePolicy, with_values: bool) -> list[_Chain] | None:
    """``[scores]`` or ``[scores, values]`` chains of a packable student, else ``None``."""
    if type(student) is ActorCriticPolicy:  # PPO's and A2C's "MlpPolicy", not a subclass that may compute otherwise
        extractors = [student.pi_features_extractor, student.vf_features_extractor]
        if not isinstance(student.action_space, spaces.Discrete) or type(student.mlp_extractor) is not MlpExtractor:
            return None
        if not all(type(extractor) is FlattenExtractor for extractor in extractors):
            return None
        mlp = student.mlp_extractor
        found = [_chain([*mlp.policy_net, student.action_net])]
        if with_values:
            found.append(_chain([*mlp.value_net, student.value_net]))
    elif type(student) is DQNPolicy:  # DQN's "MlpPolicy"
        if type(student.q_net.features_extractor) is not FlattenExtractor:
            return None
        found = [_chain(list(student.q_net.q_net))]
    else:
        return None
    return None if any(chain is None for chain in found) else found  # type: ignore[return-value]


def _features_extractor(student: BasePolicy) -> BaseFeaturesExtractor:
    if isinstance(student, ActorCriticPolicy):
        return student.pi_features_extractor
    assert isinstance(student, DQNPolicy)
    return student.q_net.features_extractor


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
        groups: dict[tuple[str, ...], list[tuple[str, int, _Chain]]] = {}
        for name in self.names:
            for index, chain in enumerate(chains[name]):
                groups.setdefault(chain.signature, []).append((name, index, chain))
        self._groups = list(groups.values())

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
        if len(observation_spaces) != 1 or len(n_scores) != 1:
            return None
        return cls(students, chains)

    @staticmethod
    def _run_group(features: th.Tensor, chains: list[_Chain]) -> list[th.Tensor]:
        hidden = features
        for depth in range(len(chains[0].layers)):
            layers = [chain.layers[depth] for chain in chains]
            bias = th.cat([layer.bias for layer in layers])
            if depth == 0:  # every chain reads the same features: one wide layer
                weight = th.cat([layer.weight for layer in layers])
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
        features = BasePolicy.extract_features(self._first, obs, _features_extractor(self._first))
        assert isinstance(features, th.Tensor)
        outputs: dict[tuple[str, int], th.Tensor] = {}
        for group in self._groups:
            for (name, index, _), output in zip(
                group, self._run_group(features, [c for _, _, c in group]), strict=True
            ):
                outputs[name, index] = output
        scores = th.stack([outputs[name, 0] for name in self.names], dim=1)
        if not self.value_names:
            return scores, features.new_zeros((len(features), 0))
        return scores, th.cat([outputs[name, 1] for name in self.value_names], dim=1)
