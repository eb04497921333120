"""Fixed parts every model has: embeddings, heads, adapters, AdaBERT cell outputs and node adds. Registered on import."""
from __future__ import annotations

import torch
from torch import nn

from nas.spaces.ops import F32, OpKind, _ln_bytes, _ln_flops, register_op


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

    def weights_read(self, spec):
        return self.params(spec) - spec.get("vocab") * spec.get("dim")  # the word table is looked up, row by row

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
