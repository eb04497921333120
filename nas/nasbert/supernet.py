"""NAS-BERT's supernet, one distillation block at a time, and the student model built from its weights.

A *block* (:class:`BlockLayout`) is ``groups_per_block`` consecutive width groups of the ``nasbert`` space. Its
supernet (:class:`BlockNet`) holds, for every layer, one module per (width, op) candidate (no weight sharing
between candidates, as in the paper), a linear adapter per width pair between its groups, and, in the first block,
the embedding (one projection per width). A *path* is a tuple of choice indices of the block's decisions (its
groups' ``blockG.hidden``, then its layers' ``layerI.op``), so paths of all blocks together are an architecture.

Block inputs and targets come from the teacher in a fixed basis (:mod:`nas.nasbert.targets`): the principal
directions of the teacher's hidden states at each block boundary, the top ``h`` of them for a student of width
``h``. Because every block at one boundary uses the same nested basis, the adapter between two blocks is exact and
fixed: the identity when widths match, else truncation to or zero-padding of the leading directions.

>>> from nas.spaces import get_space
>>> space = get_space("nasbert", "tiny")
>>> [b.decisions for b in block_layouts(space, 1, teacher_layers=6)][1]
('block1.hidden', 'layer2.op', 'layer3.op')
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn

from nas.errors import HwnasError
from nas.spaces.ops import OpSpec, build_op
from nas.spaces.ops_fixed import Embedding


class SupernetError(HwnasError, ValueError):
    """A space, preset or teacher the NAS-BERT supernet cannot be laid out on."""


@dataclass(frozen=True)
class BlockLayout:
    """Which part of the space one distillation block covers and which teacher layers it imitates."""

    index: int  # block number
    groups: tuple[int, ...]  # the space's width groups (blockG.hidden) in this block
    layers: tuple[int, ...]  # the space's layers in this block
    decisions: tuple[str, ...]  # the block's decisions: groups' hidden, then layers' op
    teacher_in: int  # teacher hidden-state index of its input (0: the block reads token ids)
    teacher_out: int  # teacher hidden-state index it learns to reproduce


def teacher_bounds(blocks: int, teacher_layers: int) -> list[int]:
    """Teacher hidden-state indices at the block boundaries: ``round(b * J / N)``, halves rounded up.

    6 teacher layers into 2 blocks: 3 + 3; into 4 blocks: 2 + 1 + 2 + 1.
    """
    if teacher_layers < blocks:
        raise SupernetError(f"the teacher has {teacher_layers} layers, fewer than the {blocks} distillation blocks; "
                            "use a deeper teacher or a larger --groups-per-block")
    return [(2 * b * teacher_layers + blocks) // (2 * blocks) for b in range(blocks + 1)]


def block_layouts(space, groups_per_block: int, teacher_layers: int) -> list[BlockLayout]:
    """The distillation blocks of ``space`` (a ``nasbert`` space)."""
    p = space.preset
    if space.name != "nasbert":
        raise SupernetError(f"NAS-BERT searches the nasbert space, not {space.name!r}")
    if groups_per_block < 1 or p.blocks % groups_per_block:
        raise SupernetError(f"--groups-per-block {groups_per_block}: the {p.name} preset has {p.blocks} width groups; "
                            f"choose a divisor of {p.blocks}")
    n = p.blocks // groups_per_block
    bounds = teacher_bounds(n, teacher_layers)
    lpg = space.layers_per_block
    out = []
    for b in range(n):
        groups = tuple(range(b * groups_per_block, (b + 1) * groups_per_block))
        layers = tuple(range(groups[0] * lpg, (groups[-1] + 1) * lpg))
        decisions = tuple(f"block{g}.hidden" for g in groups) + tuple(f"layer{i}.op" for i in layers)
        out.append(BlockLayout(b, groups, layers, decisions, bounds[b], bounds[b + 1]))
    return out


def _key(width: int, op: int) -> str:
    return f"h{width}_o{op}"


class BlockNet(nn.Module):
    """The supernet of one block: every (width, op) candidate of every layer, adapters, and (first block) the
    embedding. ``forward(x, mask, path) -> (B, T, H_last)``; ``x`` is token ids ``(B, T)`` for the first block, else
    the block's input ``(B, T, H_first)`` at its first width."""

    def __init__(self, space, layout: BlockLayout) -> None:
        super().__init__()
        p = space.preset
        self.layout = layout
        self.hiddens = tuple(p.hiddens)
        self.templates = tuple(p.op_templates())
        self.lpg = space.layers_per_block
        self.first = layout.teacher_in == 0
        if self.first:
            self.embed_dim = p.embed_dim
            self.embedding = Embedding(p.vocab, p.embed_dim, p.max_len, 2, p.embed_dim)  # proj: per width, below
            self.embed_proj = nn.ModuleDict({str(h): nn.Linear(p.embed_dim, h) for h in self.hiddens
                                             if h != p.embed_dim})
        self.layers = nn.ModuleList(
            nn.ModuleDict({_key(h, o): build_op(OpSpec.parse(t, hidden=h)) for h in self.hiddens
                           for o, t in enumerate(self.templates) if t != "identity"})
            for _ in layout.layers)
        self.adapters = nn.ModuleDict({f"{a}to{b}": nn.Linear(a, b) for a in self.hiddens for b in self.hiddens
                                       if a != b and len(layout.groups) > 1})

    def widths(self, path: tuple[int, ...]) -> list[int]:
        return [self.hiddens[i] for i in path[: len(self.layout.groups)]]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, path: tuple[int, ...]) -> torch.Tensor:
        widths = self.widths(path)
        ops = path[len(self.layout.groups):]
        if self.first:
            x = self.embedding(x, torch.zeros_like(x))  # (B, T, E)
            if widths[0] != self.embed_dim:
                x = self.embed_proj[str(widths[0])](x)  # (B, T, H0)
        for i, op in enumerate(ops):
            g = i // self.lpg
            if i and i % self.lpg == 0 and widths[g] != widths[g - 1]:
                x = self.adapters[f"{widths[g - 1]}to{widths[g]}"](x)  # (B, T, Hg)
            if self.templates[op] != "identity":
                x = self.layers[i][_key(widths[g], op)](x, mask)  # (B, T, Hg)
        return x

    def path_parameters(self, path: tuple[int, ...]) -> list[nn.Parameter]:
        """The parameters one path uses (its gradients are the only ones a step of that path makes)."""
        widths, ops = self.widths(path), path[len(self.layout.groups):]
        mods: list[nn.Module] = []
        if self.first:
            mods.append(self.embedding)
            if widths[0] != self.embed_dim:
                mods.append(self.embed_proj[str(widths[0])])
        for i, op in enumerate(ops):
            g = i // self.lpg
            if i and i % self.lpg == 0 and widths[g] != widths[g - 1]:
                mods.append(self.adapters[f"{widths[g - 1]}to{widths[g]}"])
            if self.templates[op] != "identity":
                mods.append(self.layers[i][_key(widths[g], op)])
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def sample(self, rng: random.Random) -> tuple[int, ...]:
        """A uniform path (one width per group, one op per layer)."""
        return tuple(rng.randrange(len(self.hiddens)) for _ in self.layout.groups) + tuple(
            rng.randrange(len(self.templates)) for _ in self.layout.layers)


def path_of(arch_indices: dict[str, int], layout: BlockLayout) -> tuple[int, ...]:
    return tuple(arch_indices[d] for d in layout.decisions)


@torch.no_grad()
def student_from_blocks(space, arch, nets: list[BlockNet], num_labels: int = 2, seed: int = 0) -> nn.Module:
    """The architecture's model with every weight taken from the block supernets (the head initialised from
    ``seed``): embedding and ops copied, adapters inside a block copied, adapters between blocks set to the exact
    truncation / zero-padding of the shared basis."""
    torch.manual_seed(seed)
    model = space.build(arch, num_labels=num_labels)
    idx = space.indices(arch)
    hs = model.hiddens
    first = nets[0]
    for name in ("word", "position", "token_type", "norm"):
        getattr(model.embedding, name).load_state_dict(getattr(first.embedding, name).state_dict())
    if hs[0] != first.embed_dim:
        model.embedding.proj.load_state_dict(first.embed_proj[str(hs[0])].state_dict())
    for net in nets:
        lay = net.layout
        for k, layer in enumerate(lay.layers):
            g, op = layer // space.layers_per_block, idx[f"layer{layer}.op"]
            if net.templates[op] != "identity":
                target = model.blocks[g][layer % space.layers_per_block]
                target.load_state_dict(net.layers[k][_key(hs[g], op)].state_dict())
        for g in lay.groups:
            if g == 0 or hs[g] == hs[g - 1]:
                continue
            linear = model.adapters[g].linear
            if g == lay.groups[0]:  # between blocks: the fixed map of the nested basis
                linear.weight.copy_(torch.eye(hs[g], hs[g - 1]))
                linear.bias.zero_()
            else:
                linear.load_state_dict(net.adapters[f"{hs[g - 1]}to{hs[g]}"].state_dict())
    return model


__all__ = ["BlockLayout", "BlockNet", "SupernetError", "block_layouts", "teacher_bounds", "path_of",
           "student_from_blocks"]
