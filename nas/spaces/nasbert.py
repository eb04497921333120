"""NAS-BERT layer space: a chain of L layers in N blocks, one op per layer, one hidden size per block.

Each layer picks an op at its block's hidden size among MHA(heads), FFN(inner), SepConv(k) and identity, each with
its residual and LayerNorm. Linear adapters join blocks of different widths; the embedding is projected to the
first block's width and the classification head reads the last.

>>> space = get_space("nasbert", "tiny")
>>> [d.name for d in space.decisions()][:3]
['block0.hidden', 'block1.hidden', 'layer0.op']
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nas.arch import Architecture
from nas.spaces.base import CostFactor, Decision, Preset, SearchSpace, SpaceError, get_space, register_space
from nas.spaces.ops import OpSpec, build_op


@dataclass
class NasBertPreset(Preset):
    layers: int = 8  # L: searched layers
    blocks: int = 4  # N: layers are split evenly into blocks (the unit of block-wise distillation)
    hiddens: tuple[int, ...] = (128, 192, 256)  # candidate hidden size of each block
    heads: tuple[int, ...] = (2, 3, 4, 6, 8)  # MHA candidates (number of heads)
    head_dim: int = 32  # width of one attention head (attention width = heads * head_dim)
    ffn_inner: tuple[int, ...] = (256, 384, 512, 768, 1024)  # FFN candidates (inner width)
    sepconv_k: tuple[int, ...] = (3, 5, 7)  # separable-conv candidates (kernel size)
    embed_dim: int = 128  # embedding width, projected to the first block's hidden size
    vocab: int = 30522  # tokenizer vocabulary
    max_len: int = 512  # longest sequence the position embedding covers

    def op_templates(self) -> tuple[str, ...]:
        return (
            tuple(f"mha:head_dim={self.head_dim},heads={a}" for a in self.heads)
            + tuple(f"ffn:inner={i}" for i in self.ffn_inner)
            + tuple(f"sepconv:k={k}" for k in self.sepconv_k)
            + ("identity",)
        )


@register_space
class NasBertSpace(SearchSpace):
    name = "nasbert"
    version = 1
    presets = {
        "tiny": NasBertPreset(
            "tiny", layers=4, blocks=2, hiddens=(16, 32), heads=(2, 4), head_dim=8, ffn_inner=(32, 64),
            sepconv_k=(3, 5), embed_dim=16, vocab=1000, max_len=128,
        ),
        "small": NasBertPreset("small"),
        "paper": NasBertPreset(
            "paper", layers=24, blocks=4, hiddens=(128, 192, 256, 384, 512), heads=(2, 3, 4, 6, 8), head_dim=64,
            ffn_inner=(512, 768, 1024, 1536, 2048), sepconv_k=(3, 5, 7), embed_dim=128,
        ),
    }
    default_preset = "small"
    preset: NasBertPreset

    def __init__(self, preset=None) -> None:
        super().__init__(preset)
        if self.preset.layers % self.preset.blocks:
            raise SpaceError(f"nasbert preset {self.preset.name!r}: layers must divide evenly into blocks")

    @property
    def layers_per_block(self) -> int:
        return self.preset.layers // self.preset.blocks

    def block_of(self, layer: int) -> int:
        return layer // self.layers_per_block

    def decisions(self) -> list[Decision]:
        p = self.preset
        return [Decision(f"block{b}.hidden", tuple(p.hiddens)) for b in range(p.blocks)] + [
            Decision(f"layer{i}.op", p.op_templates()) for i in range(p.layers)
        ]

    def embed_spec(self, hidden: int) -> OpSpec:
        p = self.preset
        return OpSpec.make("embed", hidden, vocab=p.vocab, dim=p.embed_dim, max_len=p.max_len, types=2)

    def cost_factors(self, num_labels: int = 2, cse: bool = False) -> list[CostFactor]:
        # every layer reads another tensor: nothing for a backend to share (``cse`` changes nothing)
        p = self.preset
        hs, ops = p.hiddens, p.op_templates()
        last = f"block{p.blocks - 1}.hidden"
        factors = [
            CostFactor("embedding", ("block0.hidden",), {(i,): ((self.embed_spec(h), 1),) for i, h in enumerate(hs)})
        ]
        for b in range(1, p.blocks):
            cells = {
                (i, j): (((OpSpec.make("proj", h2, d_in=h1), 1),) if h1 != h2 else ())
                for i, h1 in enumerate(hs)
                for j, h2 in enumerate(hs)
            }
            factors.append(CostFactor(f"adapter{b}", (f"block{b - 1}.hidden", f"block{b}.hidden"), cells))
        for layer in range(p.layers):
            cells = {(i, c): ((OpSpec.parse(t, hidden=h), 1),) for i, h in enumerate(hs) for c, t in enumerate(ops)}
            factors.append(CostFactor(f"layer{layer}", (f"block{self.block_of(layer)}.hidden", f"layer{layer}.op"), cells))
        head = {(i,): ((OpSpec.make("head", h, labels=num_labels), 1),) for i, h in enumerate(hs)}
        factors.append(CostFactor("head", (last,), head))
        return factors

    def build(self, arch: Architecture, num_labels: int = 2, pair: bool = False) -> nn.Module:
        self.indices(arch)  # validates the choices
        return NasBertModel(self, arch, num_labels)


class NasBertModel(nn.Module):
    """Embedding -> blocks of layers (adapters between widths) -> head.

    ``forward(input_ids, attention_mask, token_type_ids=None) -> logits (B, labels)``; :meth:`block_outputs`
    gives each block's output for block-wise distillation.
    """

    def __init__(self, space: NasBertSpace, arch: Architecture, num_labels: int) -> None:
        super().__init__()
        p = space.preset
        self.num_labels, self.pair = num_labels, True
        hs = [arch.choices[f"block{b}.hidden"] for b in range(p.blocks)]
        self.hiddens = hs
        self.embedding = build_op(space.embed_spec(hs[0]))
        self.adapters = nn.ModuleList(
            build_op(OpSpec.make("proj", hs[b], d_in=hs[b - 1])) if b and hs[b] != hs[b - 1] else nn.Identity()
            for b in range(p.blocks)
        )
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                build_op(OpSpec.parse(arch.choices[f"layer{b * space.layers_per_block + i}.op"], hidden=hs[b]))
                for i in range(space.layers_per_block)
            )
            for b in range(p.blocks)
        )
        self.head = build_op(OpSpec.make("head", hs[-1], labels=num_labels))

    def block_outputs(self, input_ids, attention_mask, token_type_ids=None) -> list[torch.Tensor]:
        """The embedding output then each block's output: ``[(B, T, H_0), (B, T, H_b) ...]``."""
        mask = attention_mask.to(torch.float32)  # (B, T)
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        x = self.embedding(input_ids, types)  # (B, T, H0)
        outs = [x]
        for adapter, layers in zip(self.adapters, self.blocks):
            x = adapter(x, mask) if not isinstance(adapter, nn.Identity) else x
            for layer in layers:
                x = layer(x, mask)
            outs.append(x)
        return outs

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        return self.head(self.block_outputs(input_ids, attention_mask, token_type_ids)[-1], attention_mask.float())


__all__ = ["NasBertSpace", "NasBertPreset", "NasBertModel", "get_space"]
