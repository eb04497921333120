"""AdaBERT cell-edge ops: ReLU-Conv-BN (plain and dilated), pooling, identity, zero. Registered on import."""
from __future__ import annotations

import torch
from torch import nn

from nas.spaces.ops import F32, OpError, OpKind, OpSpec, _masked, register_op


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


class _FreeKind(OpKind):
    """An op that does no arithmetic and holds no weights: it costs what its counts say, nothing."""

    module: type[nn.Module] = Identity

    def build(self, spec):
        return self.module()

    def params(self, spec):
        return 0

    def flops(self, spec, ctx):
        return 0

    def bytes(self, spec, ctx):
        return 0


@register_op
class IdentityKind(_FreeKind):
    """Skip connection (AdaBERT) / an empty layer (NAS-BERT)."""

    name = "identity"
    module = Identity


@register_op
class ZeroKind(_FreeKind):
    """No connection (AdaBERT); costs nothing once derived away."""

    name = "zero"
    module = Zero
