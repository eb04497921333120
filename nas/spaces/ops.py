"""The op vocabulary: every building block that a search space may use, as an :class:`OpSpec`.

An OpSpec is an op kind, its parameters and the hidden width it runs at; its :attr:`OpSpec.key` is the stable
string used in tables and files (``ffn:inner=1024|h=256``). Each kind is registered once with :func:`register_op`
and knows how to build its torch module (as it runs inside the model, with its residual and norm), its
parameter count, and its FLOPs and bytes moved for a :class:`Context` ``(batch, seq_len)``.

Conventions shared by every op module:
    * hidden ops take ``(x, mask)`` with ``x`` ``(B, T, H)`` float and ``mask`` ``(B, T)`` float (1 = token,
      0 = padding) and return ``(B, T, H)``;
    * fixed parts (``embed``, ``head``, ``proj``, ``combine``) declare their own inputs through
      :meth:`OpKind.example_inputs`, which the profiler uses to time each op in its own small graph.

FLOPs count a multiply-add as 2 and include element-wise work (norms, activations, residual adds, pooling);
bytes count float32 reads of inputs and weights and writes of outputs of each step (no cache reuse).

>>> spec = OpSpec.parse("ffn:inner=1024|h=256")
>>> spec.key, spec.kind, spec.get("inner"), spec.hidden
('ffn:inner=1024|h=256', 'ffn', 1024, 256)
>>> op_flops(spec, Context(1, 128)) > 0
True
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nas.errors import HwnasError
from nas.registry import add_entry

F32 = 4  # bytes per float32 element


class OpError(HwnasError, ValueError):
    """An op key or parameter that the vocabulary does not know."""


@dataclass(frozen=True, order=True)
class Context:
    """Deployment shape: how many sequences at once and how long each is."""

    batch: int  # sequences per call
    seq_len: int  # tokens per sequence (padded length)

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len

    def __str__(self) -> str:
        return f"b{self.batch}_s{self.seq_len}"


@dataclass(frozen=True, order=True)
class OpSpec:
    """One op at one width: ``kind`` + sorted ``params`` + ``hidden``."""

    kind: str  # registered op kind, e.g. "conv"
    params: tuple[tuple[str, int], ...] = ()  # sorted (name, value) pairs, e.g. (("dilation", 2), ("k", 5))
    hidden: int = 0  # the width (H) the op runs at

    @staticmethod
    def make(kind: str, hidden: int, **params: int) -> OpSpec:
        spec = OpSpec(kind, tuple(sorted((k, int(v)) for k, v in params.items())), int(hidden))
        get_op(kind).check(spec)
        return spec

    @property
    def key(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.kind}{':' + p if p else ''}|h={self.hidden}"

    @property
    def template(self) -> str:
        """The key without its width: the string an architecture file stores (``conv:dilation=2,k=3``)."""
        return self.key.split("|", 1)[0]

    def get(self, name: str) -> int:
        for k, v in self.params:
            if k == name:
                return v
        raise OpError(f"op {self.key!r} has no parameter {name!r}")

    def with_hidden(self, hidden: int) -> OpSpec:
        return OpSpec.make(self.kind, hidden, **dict(self.params))

    @staticmethod
    def parse(key: str, hidden: int | None = None) -> OpSpec:
        """Parse ``kind[:a=1,b=2][|h=H]``; ``hidden`` supplies the width when the key has none."""
        head, _, h = key.strip().partition("|")
        kind, _, plist = head.partition(":")
        params: dict[str, int] = {}
        try:
            for item in filter(None, plist.split(",")):
                name, _, value = item.partition("=")
                params[name.strip()] = int(value)
            if h:
                if not h.startswith("h="):
                    raise ValueError(h)
                hidden = int(h[2:])
        except ValueError:
            raise OpError(f"malformed op key {key!r}: expected kind:name=int,...|h=int") from None
        if hidden is None:
            raise OpError(f"op key {key!r} has no width: add '|h=<hidden>'")
        if kind not in OP_REGISTRY:
            raise OpError(f"unknown op {kind!r} in {key!r}; known ops: {', '.join(sorted(OP_REGISTRY))}")
        return OpSpec.make(kind, hidden, **params)

    def __str__(self) -> str:
        return self.key


# ----------------------------------------------------------------------------------------------- registry
class OpKind:
    """How one op kind behaves. Subclasses register with :func:`register_op`."""

    name: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()  # parameter names every spec of this kind must have
    fixed: ClassVar[bool] = False  # True for fixed parts (embed, head, ...) with their own inputs

    def check(self, spec: OpSpec) -> None:
        names = {k for k, _ in spec.params}
        if names != set(self.required):
            raise OpError(f"op {spec.kind!r} takes parameters {sorted(self.required)}, got {sorted(names)}")
        if spec.hidden <= 0:
            raise OpError(f"op {spec.key!r}: hidden must be positive")
        for k, v in spec.params:
            if v <= 0:
                raise OpError(f"op {spec.key!r}: parameter {k} must be positive")

    def build(self, spec: OpSpec) -> nn.Module:
        raise NotImplementedError

    def params(self, spec: OpSpec) -> int:
        return sum(p.numel() for p in self.build(spec).parameters())

    def weights_read(self, spec: OpSpec) -> int:
        """Parameters one run reads whole, whatever its input (a lookup table's rows are read per token: not here)."""
        return self.params(spec)

    def flops(self, spec: OpSpec, ctx: Context) -> int:
        raise NotImplementedError

    def bytes(self, spec: OpSpec, ctx: Context) -> int:
        raise NotImplementedError

    def example_inputs(self, spec: OpSpec, ctx: Context, gen: torch.Generator | None = None) -> dict:
        """Inputs of the op's own timing graph, by name."""
        x = torch.randn(ctx.batch, ctx.seq_len, spec.hidden, generator=gen)  # (B, T, H)
        return {"x": x, "mask": torch.ones(ctx.batch, ctx.seq_len)}  # mask (B, T)


OP_REGISTRY: dict[str, OpKind] = {}


def register_op(cls: type[OpKind]) -> type[OpKind]:
    """Class decorator: add an op kind to the vocabulary under ``cls.name``."""
    add_entry(OP_REGISTRY, cls.name, cls(), OpError, "op kind")
    return cls


def get_op(kind: str) -> OpKind:
    try:
        return OP_REGISTRY[kind]
    except KeyError:
        raise OpError(f"unknown op {kind!r}; known ops: {', '.join(sorted(OP_REGISTRY))}") from None


def build_op(spec: OpSpec) -> nn.Module:
    return get_op(spec.kind).build(spec)


def op_params(spec: OpSpec) -> int:
    return get_op(spec.kind).params(spec)


@functools.lru_cache(maxsize=4096)
def weights_read_mb(spec: OpSpec) -> float:
    """MB (float32) of weights one run of the op reads whole: what a model's runs stream through the cache."""
    return 4e-6 * get_op(spec.kind).weights_read(spec)


def weights_mb(bag: Mapping[OpSpec, int]) -> float:
    """MB of weights a model with this op bag (op -> count) reads per run (:func:`weights_read_mb` summed)."""
    return float(sum(n * weights_read_mb(s) for s, n in bag.items()))


def op_flops(spec: OpSpec, ctx: Context) -> int:
    return int(get_op(spec.kind).flops(spec, ctx))


def op_bytes(spec: OpSpec, ctx: Context) -> int:
    return int(get_op(spec.kind).bytes(spec, ctx))


# ------------------------------------------------------------------------------------- shared counting
def _ln_flops(n: int, h: int) -> int:
    return 8 * n * h  # mean, var, normalise, scale, shift


def _ln_bytes(n: int, h: int) -> int:
    return F32 * (2 * n * h + 2 * h)


def _masked(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return y * mask.unsqueeze(-1)  # (B, T, H)


OpBuilder = Callable[[OpSpec], nn.Module]


# the op kinds register themselves on import (after the registry above exists)
from nas.spaces import ops_cnn, ops_layers, ops_fixed  # noqa: E402, F401, I001  (listing order: edges, layers, fixed)
