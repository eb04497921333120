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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nas.errors import HwnasError

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
    if not cls.name or cls.name in OP_REGISTRY:
        raise OpError(f"op kind {cls.name!r} is empty or registered twice")
    OP_REGISTRY[cls.name] = cls()
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


# ------------------------------------------------------------------------------ AdaBERT cell-edge ops
class ConvBlock(nn.Module):
    """ReLU -> Conv1d (same length) -> BatchNorm, masked."""

    def __init__(self, hidden: int, k: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(hidden, hidden, k, padding=dilation * (k - 1) // 2, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm1d(hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.conv(torch.relu(_masked(x, mask)).transpose(1, 2))  # (B, H, T)
        return _masked(self.bn(y).transpose(1, 2), mask)  # (B, T, H)


@register_op
class Conv(OpKind):
    """Conv1d over time (kernel k, dilation) with ReLU before and BatchNorm after (AdaBERT edge)."""

    name = "conv"
    required = ("dilation", "k")

    def check(self, spec: OpSpec) -> None:
        super().check(spec)
        if spec.get("k") % 2 == 0:
            raise OpError(f"op {spec.key!r}: kernel size must be odd to keep the sequence length")

    def build(self, spec):
        return ConvBlock(spec.hidden, spec.get("k"), spec.get("dilation"))

    def params(self, spec):
        h = spec.hidden
        return h * h * spec.get("k") + 2 * h

    def flops(self, spec, ctx):
        n, h = ctx.tokens, spec.hidden
        return 2 * n * h * h * spec.get("k") + n * h * 5  # conv + mask, relu, bn (scale+shift), mask

    def bytes(self, spec, ctx):
        n, h = ctx.tokens, spec.hidden
        return F32 * (6 * n * h + h * h * spec.get("k") + 4 * h)


class Pool(nn.Module):
    """Same-length average or max pooling over time; padding never changes the outputs at real tokens."""

    def __init__(self, k: int, mode: str) -> None:
        super().__init__()
        self.k, self.mode = k, mode

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":  # padding counts as 0, like the zero padding past the ends
            xt = _masked(x, mask).transpose(1, 2)  # (B, H, T)
            y = nn.functional.avg_pool1d(xt, self.k, stride=1, padding=self.k // 2, count_include_pad=True)
            return _masked(y.transpose(1, 2), mask)  # (B, T, H)
        pad = mask.unsqueeze(-1) == 0  # (B, T, 1); padding counts as -inf, like max_pool1d's own padding
        xt = x.masked_fill(pad, torch.finfo(x.dtype).min).transpose(1, 2)  # (B, H, T)
        y = nn.functional.max_pool1d(xt, self.k, stride=1, padding=self.k // 2)
        return y.transpose(1, 2).masked_fill(pad, 0.0)  # (B, T, H)


class _PoolKind(OpKind):
    required = ("k",)
    mode = "avg"

    def build(self, spec):
        return Pool(spec.get("k"), self.mode)

    def params(self, spec):
        return 0

    def flops(self, spec, ctx):
        mask_test = ctx.tokens if self.mode == "max" else 0  # max pooling compares the (B, T) mask once
        return ctx.tokens * spec.hidden * (spec.get("k") + 2) + mask_test  # window reduce + 2 masks

    def bytes(self, spec, ctx):
        return F32 * 4 * ctx.tokens * spec.hidden


@register_op
class AvgPool(_PoolKind):
    """Average pooling over time, window k, same length (AdaBERT edge)."""

    name = "avgpool"
    mode = "avg"


@register_op
class MaxPool(_PoolKind):
    """Max pooling over time, window k, same length (AdaBERT edge)."""

    name = "maxpool"
    mode = "max"


class Identity(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)  # (B, T, H); no arithmetic, so it costs what its FLOP count says: nothing


@register_op
class IdentityKind(OpKind):
    """Skip connection (AdaBERT) / an empty layer (NAS-BERT)."""

    name = "identity"

    def build(self, spec):
        return Identity()

    def params(self, spec):
        return 0

    def flops(self, spec, ctx):
        return 0

    def bytes(self, spec, ctx):
        return 0


@register_op
class ZeroKind(OpKind):
    """No connection (AdaBERT); costs nothing once derived away."""

    name = "zero"

    def build(self, spec):
        return Zero()

    def params(self, spec):
        return 0

    def flops(self, spec, ctx):
        return 0

    def bytes(self, spec, ctx):
        return 0


# ------------------------------------------------------------------------------------- NAS-BERT layer ops
class MHA(nn.Module):
    """Post-LN multi-head self-attention: LN(x + O(softmax(QK^T/sqrt(d)) V))."""

    def __init__(self, hidden: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.qkv = nn.Linear(hidden, 3 * inner)
        self.out = nn.Linear(inner, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3x (B, A, T, D)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, A, T, T)
        scores = scores + (mask[:, None, None, :] - 1.0) * 1e4
        ctx = torch.softmax(scores, dim=-1) @ v  # (B, A, T, D)
        ctx = ctx.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)  # (B, T, A*D)
        return self.norm(x + self.out(ctx))  # (B, T, H)


@register_op
class MHAKind(OpKind):
    """Multi-head self-attention (heads x head_dim) with residual and post-LayerNorm (NAS-BERT layer)."""

    name = "mha"
    required = ("head_dim", "heads")

    def build(self, spec):
        return MHA(spec.hidden, spec.get("heads"), spec.get("head_dim"))

    def params(self, spec):
        h, i = spec.hidden, spec.get("heads") * spec.get("head_dim")
        return 3 * (h * i + i) + i * h + h + 2 * h

    def flops(self, spec, ctx):
        n, h, t = ctx.tokens, spec.hidden, ctx.seq_len
        a, i = spec.get("heads"), spec.get("heads") * spec.get("head_dim")
        scores = ctx.batch * a * t * t  # elements of the (B, A, T, T) score tensor
        proj = 2 * n * h * 3 * i + 2 * n * i * h + 3 * n * i + n * h  # qkv + out, with their biases
        attn = 2 * 2 * n * t * i  # QK^T and PV
        elem = 2 * scores + 5 * scores + 2 * n  # scale + mask add, softmax, additive mask from (B, T)
        return proj + attn + elem + n * h + _ln_flops(n, h)  # + residual, LayerNorm

    def bytes(self, spec, ctx):
        n, h, t = ctx.tokens, spec.hidden, ctx.seq_len
        a, i = spec.get("heads"), spec.get("heads") * spec.get("head_dim")
        weights = 4 * h * i
        acts = n * h + 3 * n * i * 2 + 2 * 2 * ctx.batch * a * t * t + 2 * n * i + n * h * 3
        return F32 * (weights + acts) + _ln_bytes(n, h)


class FFN(nn.Module):
    """Post-LN feed-forward: LN(x + W2 GeLU(W1 x))."""

    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(hidden, inner), nn.Linear(inner, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.fc2(nn.functional.gelu(self.fc1(x))))  # (B, T, H)


@register_op
class FFNKind(OpKind):
    """Feed-forward block (hidden -> inner -> hidden, GeLU) with residual and post-LayerNorm (NAS-BERT layer)."""

    name = "ffn"
    required = ("inner",)

    def build(self, spec):
        return FFN(spec.hidden, spec.get("inner"))

    def params(self, spec):
        h, i = spec.hidden, spec.get("inner")
        return 2 * h * i + i + 3 * h

    def flops(self, spec, ctx):
        n, h, i = ctx.tokens, spec.hidden, spec.get("inner")
        return 4 * n * h * i + n * i + n * i * 8 + n * h * 2 + _ln_flops(n, h)  # matmuls, bias, gelu, bias+res

    def bytes(self, spec, ctx):
        n, h, i = ctx.tokens, spec.hidden, spec.get("inner")
        return F32 * (2 * h * i + 2 * n * h + 4 * n * i + 2 * n * h) + _ln_bytes(n, h)


class SepConv(nn.Module):
    """LN(x + GeLU(pointwise(depthwise_k(x)))), masked."""

    def __init__(self, hidden: int, k: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(hidden, hidden, k, padding=k // 2, groups=hidden)
        self.pointwise = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(_masked(x, mask).transpose(1, 2)).transpose(1, 2)  # (B, T, H)
        return self.norm(x + nn.functional.gelu(self.pointwise(y)))  # (B, T, H)


@register_op
class SepConvKind(OpKind):
    """Depthwise (kernel k) + pointwise convolution with GeLU, residual and post-LayerNorm (NAS-BERT layer)."""

    name = "sepconv"
    required = ("k",)

    def check(self, spec: OpSpec) -> None:
        super().check(spec)
        if spec.get("k") % 2 == 0:
            raise OpError(f"op {spec.key!r}: kernel size must be odd to keep the sequence length")

    def build(self, spec):
        return SepConv(spec.hidden, spec.get("k"))

    def params(self, spec):
        h, k = spec.hidden, spec.get("k")
        return h * k + h + h * h + h + 2 * h

    def flops(self, spec, ctx):
        n, h, k = ctx.tokens, spec.hidden, spec.get("k")
        return 2 * n * h * k + 2 * n * h * h + n * h * (1 + 1 + 1 + 8 + 1) + _ln_flops(n, h)

    def bytes(self, spec, ctx):
        n, h, k = ctx.tokens, spec.hidden, spec.get("k")
        return F32 * (h * k + h * h + 8 * n * h) + _ln_bytes(n, h)


# ------------------------------------------------------------------------------------------ fixed parts
class Embedding(nn.Module):
    """Word + position + token-type embeddings at ``dim``, LayerNorm, projected to ``hidden`` if they differ."""

    def __init__(self, vocab: int, dim: int, max_len: int, types: int, hidden: int) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(max_len, dim)
        self.token_type = nn.Embedding(types, dim)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, hidden) if dim != hidden else nn.Identity()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        e = self.word(input_ids) + self.position(pos)[None] + self.token_type(token_type_ids)  # (B, T, E)
        return self.proj(self.norm(e))  # (B, T, H)


@register_op
class EmbedKind(OpKind):
    """Word + position + token-type embeddings, LayerNorm, projection to the model width (fixed part)."""

    name = "embed"
    required = ("dim", "max_len", "types", "vocab")
    fixed = True

    def build(self, spec):
        g = spec.get
        return Embedding(g("vocab"), g("dim"), g("max_len"), g("types"), spec.hidden)

    def params(self, spec):
        g, h = spec.get, spec.hidden
        p = (g("vocab") + g("max_len") + g("types")) * g("dim") + 2 * g("dim")
        return p + (g("dim") * h + h if g("dim") != h else 0)

    def flops(self, spec, ctx):
        n, e, h = ctx.tokens, spec.get("dim"), spec.hidden
        return 2 * n * e + _ln_flops(n, e) + (2 * n * e * h + n * h if e != h else 0)

    def bytes(self, spec, ctx):
        n, e, h = ctx.tokens, spec.get("dim"), spec.hidden
        b = F32 * (4 * n * e) + 8 * 2 * n + _ln_bytes(n, e)
        return b + (F32 * (e * h + n * e + n * h) if e != h else 0)

    def example_inputs(self, spec, ctx, gen=None):
        ids = torch.randint(0, spec.get("vocab"), (ctx.batch, ctx.seq_len), generator=gen)  # (B, T)
        return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids)}


class Head(nn.Module):
    """Masked mean pooling -> Linear + tanh -> Linear to ``labels`` logits."""

    def __init__(self, hidden: int, labels: int) -> None:
        super().__init__()
        self.pool = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, labels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1)  # (B, T, 1)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H)
        return self.classifier(torch.tanh(self.pool(pooled)))  # (B, labels)


@register_op
class HeadKind(OpKind):
    """Masked mean pooling, pooler (tanh) and classifier to `labels` logits (fixed part)."""

    name = "head"
    required = ("labels",)
    fixed = True

    def build(self, spec):
        return Head(spec.hidden, spec.get("labels"))

    def params(self, spec):
        h, c = spec.hidden, spec.get("labels")
        return h * h + h + h * c + c

    def flops(self, spec, ctx):
        n, h, b, c = ctx.tokens, spec.hidden, ctx.batch, spec.get("labels")
        pool = 2 * n * h + n + b + b * h  # mask multiply + sum, mask sum, clamp, divide
        return pool + 2 * b * h * h + 2 * b * h + 2 * b * h * c + b * c  # pooler (+bias, tanh), classifier (+bias)

    def bytes(self, spec, ctx):
        n, h, b, c = ctx.tokens, spec.hidden, ctx.batch, spec.get("labels")
        return F32 * (2 * n * h + h * h + h * c + 3 * b * h + b * c)


class Projection(nn.Module):
    """Linear adapter between widths: (B, T, in) -> (B, T, hidden)."""

    def __init__(self, d_in: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@register_op
class ProjKind(OpKind):
    """Linear adapter from width d_in to the next block's width (fixed part, NAS-BERT)."""

    name = "proj"
    required = ("d_in",)
    fixed = True

    def build(self, spec):
        return Projection(spec.get("d_in"), spec.hidden)

    def params(self, spec):
        return spec.get("d_in") * spec.hidden + spec.hidden

    def flops(self, spec, ctx):
        return 2 * ctx.tokens * spec.get("d_in") * spec.hidden + ctx.tokens * spec.hidden

    def bytes(self, spec, ctx):
        d, h, n = spec.get("d_in"), spec.hidden, ctx.tokens
        return F32 * (d * h + n * d + n * h)

    def example_inputs(self, spec, ctx, gen=None):
        x = torch.randn(ctx.batch, ctx.seq_len, spec.get("d_in"), generator=gen)  # (B, T, D_in)
        return {"x": x, "mask": torch.ones(ctx.batch, ctx.seq_len)}


class Combine(nn.Module):
    """AdaBERT cell output: the mean of its ``nodes`` intermediate nodes."""

    def __init__(self, nodes: int) -> None:
        super().__init__()
        self.nodes = nodes

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.stack(xs, 0).mean(0)  # (B, T, H)


@register_op
class CombineKind(OpKind):
    """Mean of an AdaBERT cell's intermediate nodes: the cell output (fixed part)."""

    name = "combine"
    required = ("nodes",)
    fixed = True

    def build(self, spec):
        return Combine(spec.get("nodes"))

    def params(self, spec):
        return 0

    def flops(self, spec, ctx):
        return ctx.tokens * spec.hidden * spec.get("nodes")

    def bytes(self, spec, ctx):
        return F32 * ctx.tokens * spec.hidden * (2 * spec.get("nodes") + 1)

    def example_inputs(self, spec, ctx, gen=None):
        return {f"n{i}": torch.randn(ctx.batch, ctx.seq_len, spec.hidden, generator=gen) for i in range(spec.get("nodes"))}


class Add(nn.Module):
    """Element-wise sum of two activations (an AdaBERT node accumulating one incoming edge)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y  # (B, T, H)


@register_op
class AddKind(OpKind):
    """Adds one edge's output into an AdaBERT node (fixed part, one per non-zero edge)."""

    name = "add"
    fixed = True

    def build(self, spec):
        return Add()

    def params(self, spec):
        return 0

    def flops(self, spec, ctx):
        return ctx.tokens * spec.hidden

    def bytes(self, spec, ctx):
        return F32 * 3 * ctx.tokens * spec.hidden

    def example_inputs(self, spec, ctx, gen=None):
        return {name: torch.randn(ctx.batch, ctx.seq_len, spec.hidden, generator=gen) for name in ("x", "y")}


OpBuilder = Callable[[OpSpec], nn.Module]
