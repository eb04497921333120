"""NAS-BERT layer ops, each with its residual and post-LayerNorm: MHA, FFN, separable conv. Registered on import."""
from __future__ import annotations

import math

import torch
from torch import nn

from nas.spaces.ops import F32, OpError, OpKind, OpSpec, _ln_bytes, _ln_flops, _masked, register_op


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
