"""Search-space interface, the space registry, and the cost structure the latency predictor consumes.

A space lists its :class:`Decision` s (each a list of candidate choices), samples and enumerates architectures,
builds a concrete model for one, and describes its latency as a sum of :class:`CostFactor` s: each factor depends
on zero, one or two decisions and says, for each combination of their choices, which OpSpecs run (and how many
times). A predictor turns a factor into a tensor of milliseconds; the loss contracts it with the search's
softmax weights (``latency.loss``). One-hot weights give exactly the predictor's figure for that architecture.
"""
from __future__ import annotations

import abc
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from nas.errors import HwnasError
from nas.registry import add_entry
from nas.spaces.ops import Context, OpSpec, op_flops, op_params

if TYPE_CHECKING:
    from nas.arch import Architecture


class SpaceError(HwnasError, ValueError):
    """An unknown space or preset, or an architecture that does not fit its space."""


@dataclass(frozen=True)
class Decision:
    """One choice an architecture makes."""

    name: str  # e.g. "layer3.op" or "cells"
    choices: tuple[Any, ...]  # JSON-able candidates (op templates as strings, ints for widths/counts)

    def index(self, value: Any) -> int:
        for i, choice in enumerate(self.choices):
            if type(choice) is type(value) and choice == value:  # 16.0 or true must not pass for 16 or 1
                return i
        raise SpaceError(f"decision {self.name!r}: {value!r} is not a candidate; choose one of {list(self.choices)}")


OpBag = tuple[tuple[OpSpec, int], ...]  # ops that run, with how many times each


@dataclass(frozen=True)
class CostFactor:
    """Latency that depends on ``decisions`` (0, 1 or 2 of them).

    ``cells`` maps a tuple of choice indices (one per decision, in order) to the ops that run for it.
    """

    name: str  # readable label, e.g. "layer3" or "embedding"
    decisions: tuple[str, ...]  # decision names, in the order of the index tuples
    cells: dict[tuple[int, ...], OpBag] = field(hash=False)


@dataclass(frozen=True)
class SharedFactor:
    """Parameter-free ops that several decisions apply to the same tensors, computed once per tensor and op.

    A backend that eliminates common subexpressions (onnxruntime's graph optimiser) runs one max-pooling of a
    tensor however many edges read it; eager PyTorch runs it once per edge. For hub choice ``k`` there are
    ``tensors[k]`` tensors that every decision in ``readers`` reads (e.g. the cell outputs an AdaBERT edge reads,
    one per cell); for each op choice ``c`` taken by at least one reader, ``ops[c]`` runs once per such tensor. So
    the cost is ``tensors[k] * sum over the distinct choices c of the readers of cost(ops[c])``, which is not a sum
    over single decisions; the loss uses its expectation under independent choices (``latency.loss``).
    """

    name: str  # readable label, e.g. "cell inputs"
    hub: str  # the decision that sets how many tensors (AdaBERT: "cells")
    readers: tuple[str, ...]  # decisions with a common choice list, each applying its choice to those tensors
    tensors: dict[int, int]  # hub choice index -> number of tensors read by every reader
    ops: dict[int, OpBag] = field(hash=False)  # reader choice index -> ops run once per tensor (shareable choices)

    def bag(self, idx: dict[str, int]) -> OpBag:
        """The ops this factor runs for one architecture (choice indices by decision)."""
        n = self.tensors[idx[self.hub]]
        chosen = sorted({idx[r] for r in self.readers} & set(self.ops))
        return tuple((spec, count * n) for c in chosen for spec, count in self.ops[c] if n)


def factor_bag(f: CostFactor | SharedFactor, idx: dict[str, int]) -> OpBag:
    """The ops one factor runs for one architecture (choice indices by decision)."""
    if isinstance(f, SharedFactor):
        return f.bag(idx)
    return f.cells[tuple(idx[d] for d in f.decisions)]


def factors_bag(factors: list[CostFactor | SharedFactor], idx: dict[str, int]) -> Counter[OpSpec]:
    """The ops an architecture (choice indices by decision) runs under ``factors``, with multiplicity."""
    bag: Counter[OpSpec] = Counter()
    for f in factors:
        for spec, count in factor_bag(f, idx):
            bag[spec] += count
    return +bag


def factor_specs(f: CostFactor | SharedFactor) -> set[OpSpec]:
    """Every OpSpec the factor can run."""
    bags = f.ops.values() if isinstance(f, SharedFactor) else f.cells.values()
    return {s for bag in bags for s, _ in bag}


@dataclass
class Preset:
    """Base class of a space's preset config (a dataclass per space)."""

    name: str = "small"  # the preset's registered name


class SearchSpace(abc.ABC):
    """A declarative search space. Subclasses register with :func:`register_space`."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1  # bump when decisions or candidates change meaning
    presets: ClassVar[dict[str, Preset]] = {}
    default_preset: ClassVar[str] = "small"

    def __init__(self, preset: str | Preset | None = None) -> None:
        if isinstance(preset, Preset):
            self.preset = preset
        else:
            name = preset or self.default_preset
            if name not in self.presets:
                raise SpaceError(
                    f"space {self.name!r} has no preset {name!r}; choose one of {sorted(self.presets)}"
                )
            self.preset = self.presets[name]

    # -- decisions -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def decisions(self) -> list[Decision]:
        """Every decision, in a fixed order."""

    def decision(self, name: str) -> Decision:
        for d in self.decisions():
            if d.name == name:
                return d
        raise SpaceError(f"space {self.name!r} has no decision {name!r}")

    def size(self) -> int:
        """Number of distinct architectures (product of the candidate counts)."""
        n = 1
        for d in self.decisions():
            n *= len(d.choices)
        return n

    def sample(self, seed: int | random.Random) -> Architecture:
        """A uniformly random architecture; the same seed gives the same architecture."""
        from nas.arch import Architecture

        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        choices = {d.name: rng.choice(d.choices) for d in self.decisions()}
        return Architecture(self.name, self.version, self.preset.name, choices)

    def from_indices(self, indices: dict[str, int]) -> Architecture:
        from nas.arch import Architecture

        choices = {d.name: d.choices[indices[d.name]] for d in self.decisions()}
        return Architecture(self.name, self.version, self.preset.name, choices)

    def indices(self, arch: Architecture) -> dict[str, int]:
        return {d.name: d.index(arch.choices[d.name]) for d in self.decisions()}

    # -- cost structure --------------------------------------------------------------------------------
    @abc.abstractmethod
    def cost_factors(self, num_labels: int = 2, cse: bool = False) -> list[CostFactor | SharedFactor]:
        """The model's latency as a sum of factors over at most two decisions each, plus, with ``cse`` (a backend
        that computes an op once per tensor however often the graph repeats it), :class:`SharedFactor` s."""

    def runs_as(self, idx: dict[str, int]) -> dict[str, int]:
        """Choice indices of an architecture whose model runs the same ops as ``idx``'s at inference: ``idx``
        itself, unless part of a model can go unused (AdaBERT's dead cells). Discrete prices go through it."""
        return idx

    def arch_ops(self, arch: Architecture, num_labels: int = 2, cse: bool = False) -> Counter[OpSpec]:
        """The ops one architecture runs, with multiplicity (from the same factors the loss uses); with ``cse``,
        an op repeated on one tensor counts once (what a backend that eliminates common subexpressions runs)."""
        return factors_bag(self.cost_factors(num_labels, cse), self.runs_as(self.indices(arch)))

    def unique_ops(self, num_labels: int = 2) -> list[OpSpec]:
        """Every OpSpec any architecture of this space can run (what the profiler measures)."""
        specs = {s for f in self.cost_factors(num_labels) for s in factor_specs(f)}
        return sorted(specs, key=lambda s: s.key)

    def flops(self, arch: Architecture, ctx: Context, num_labels: int = 2) -> int:
        return sum(op_flops(s, ctx) * c for s, c in self.arch_ops(arch, num_labels).items())

    def params(self, arch: Architecture, num_labels: int = 2) -> int:
        """Parameter count of the built model (shared weights counted once)."""
        return sum(p.numel() for p in self.build(arch, num_labels=num_labels).parameters())

    def analytic_params(self, arch: Architecture, num_labels: int = 2) -> int:
        """Sum of per-op parameter counts over ops as run (cheap; a capacity proxy)."""
        return sum(op_params(s) * c for s, c in self.arch_ops(arch, num_labels).items())

    # -- models ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def build(self, arch: Architecture, num_labels: int = 2, pair: bool = False) -> nn.Module:
        """A concrete model: ``forward(input_ids, attention_mask, token_type_ids=None) -> logits (B, labels)``."""

    def enumerate(self, limit: int | None = None):
        """Every architecture in a fixed order (use ``limit`` on large spaces)."""
        names = [d.name for d in self.decisions()]
        ranges = [range(len(d.choices)) for d in self.decisions()]
        for i, combo in enumerate(itertools.product(*ranges)):
            if limit is not None and i >= limit:
                return
            yield self.from_indices(dict(zip(names, combo)))


SPACE_REGISTRY: dict[str, type[SearchSpace]] = {}


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Class decorator: add a search space under ``cls.name``."""
    add_entry(SPACE_REGISTRY, cls.name, cls, SpaceError, "space")
    return cls


def get_space(name: str, preset: str | None = None) -> SearchSpace:
    """Instantiate a registered space.

    >>> get_space("nasbert", "tiny").name
    'nasbert'
    """
    import nas.spaces  # noqa: F401  (registers the built-in spaces)

    try:
        cls = SPACE_REGISTRY[name]
    except KeyError:
        raise SpaceError(f"unknown space {name!r}; known spaces: {', '.join(sorted(SPACE_REGISTRY))}") from None
    return cls(preset)
