"""AdaBERT cell space: K stacked CNN cells sharing one op choice per edge.

Each cell has two inputs (the outputs of the two previous cells; the first cell gets the embedded sentence A and
sentence B, the same sentence twice for single-sentence tasks), three intermediate nodes and nine edges
(node j reads the two inputs and every earlier node). The cell output is the mean of its nodes. Decisions: the op
of each edge (shared by all cells, weights not shared) and the number of cells ``cells`` in 1..K_max.

>>> space = get_space("adabert", "tiny")
>>> len(space.decisions()), space.decision("cells").choices
(10, (1, 2, 3))
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nas.arch import Architecture
from nas.spaces.base import CostFactor, Decision, Preset, SearchSpace, SharedFactor, get_space, register_space
from nas.spaces.ops import OpSpec, build_op

ADABERT_OPS = (
    "conv:dilation=1,k=3", "conv:dilation=1,k=5", "conv:dilation=1,k=7",
    "conv:dilation=2,k=3", "conv:dilation=2,k=5", "conv:dilation=2,k=7",
    "avgpool:k=3", "maxpool:k=3", "identity", "zero",
)  # fmt: skip
NODES = 3
SHAREABLE = ("avgpool", "maxpool", "identity")  # parameter-free op kinds: the same op on one tensor is one computation


@dataclass
class AdaBertPreset(Preset):
    max_cells: int = 8  # K_max: the number of cells is searched in 1..K_max
    hidden: int = 128  # cell width
    embed_dim: int = 384  # word-embedding width (the teacher's, so it can be initialised from it)
    vocab: int = 30522  # tokenizer vocabulary (the teacher's)
    max_len: int = 512  # longest sequence the position embedding covers
    ops: tuple[str, ...] = ADABERT_OPS  # candidate op templates per edge


def edge_names() -> list[tuple[str, int, str]]:
    """(decision name, node index, source name) for the 9 edges: node j reads in0, in1, n0..n(j-1)."""
    out = []
    for j in range(NODES):
        for src in ["in0", "in1"] + [f"n{i}" for i in range(j)]:
            out.append((f"n{j}.{src}", j, src))
    return out


INPUT_EDGES = {src: tuple(n for n, _, s in edge_names() if s == src) for src in ("in0", "in1")}  # edges reading
# each cell input


@register_space
class AdaBertSpace(SearchSpace):
    name = "adabert"
    version = 1
    presets = {
        "tiny": AdaBertPreset("tiny", max_cells=3, hidden=16, embed_dim=16, vocab=1000, max_len=128),
        "small": AdaBertPreset("small", max_cells=8, hidden=64, embed_dim=384, vocab=30522, max_len=512),
        "paper": AdaBertPreset("paper", max_cells=8, hidden=128, embed_dim=384, vocab=30522, max_len=512),
    }
    default_preset = "small"
    preset: AdaBertPreset

    def decisions(self) -> list[Decision]:
        ops = tuple(self.preset.ops)
        return [Decision("cells", tuple(range(1, self.preset.max_cells + 1)))] + [
            Decision(name, ops) for name, _, _ in edge_names()
        ]

    def op(self, template: str) -> OpSpec:
        return OpSpec.parse(template, hidden=self.preset.hidden)

    def embed_spec(self) -> OpSpec:
        p = self.preset
        return OpSpec.make("embed", p.hidden, vocab=p.vocab, dim=p.embed_dim, max_len=p.max_len, types=2)

    def cost_factors(self, num_labels: int = 2, cse: bool = False) -> list[CostFactor | SharedFactor]:
        """Per edge: its op and the add into its node, once per cell. With ``cse`` (onnxruntime), the
        parameter-free ops (pooling, identity) are :class:`SharedFactor` s instead: the same pooling of one tensor
        by several edges runs once. Which tensors the edges share, with K cells, single-sentence input (the
        embedding e feeds the first cell twice; cell k reads c(k-2), c(k-1)): e and c1..c(K-2) are each read by the
        in0 and in1 edges (of two cells), c(K-1) by the in1 edges of the last cell only, and node n0 of each cell by
        the n1.n0 and n2.n0 edges."""
        p = self.preset
        ks = self.decision("cells").choices
        add = OpSpec.make("add", p.hidden)  # each non-zero edge's output is added into its node
        shared = {ci: self.op(t) for ci, t in enumerate(p.ops) if cse and t != "zero" and self.op(t).kind in SHAREABLE}
        factors: list[CostFactor | SharedFactor] = [CostFactor("embedding", (), {(): ((self.embed_spec(), 1),)})]
        for name, _, _ in edge_names():
            cells = {}
            for ki, k in enumerate(ks):
                for ci, t in enumerate(p.ops):
                    own = () if ci in shared else ((self.op(t), k),)
                    cells[(ki, ci)] = () if t == "zero" else (*own, (add, k))
            factors.append(CostFactor(name, ("cells", name), cells))
        if shared:
            ops = {ci: ((spec, 1),) for ci, spec in shared.items()}
            reads: dict[str, list[str]] = {}
            for name, _, src in edge_names():
                reads.setdefault(src, []).append(name)
            groups = [("cell inputs", reads["in0"] + reads["in1"], {ki: max(k - 1, 1) for ki, k in enumerate(ks)}),
                      ("last cell's in1", reads["in1"], {ki: int(k >= 2) for ki, k in enumerate(ks)})]
            groups += [(f"node {src}", names, dict(enumerate(ks))) for src, names in reads.items() if src[0] == "n"]
            factors += [SharedFactor(label, "cells", tuple(names), tensors, ops) for label, names, tensors in groups]
        combine = OpSpec.make("combine", p.hidden, nodes=NODES)
        factors.append(CostFactor("combine", ("cells",), {(ki,): ((combine, k),) for ki, k in enumerate(ks)}))
        factors.append(CostFactor("head", (), {(): ((OpSpec.make("head", p.hidden, labels=num_labels), 1),)}))
        return factors

    def runs_as(self, idx: dict[str, int]) -> dict[str, int]:
        """An architecture that runs the same ops at inference: the live cells only (see :func:`live_cells`).

        With ``L`` live cells of ``K``, the cells that run are ``L`` identical cells in a chain, which is what the
        architecture with ``cells = L`` runs when it reads its previous cell. A chain through the in0 edges (no
        in1 edge) is priced with the in0 and in1 edge ops swapped, so that the pooling shared per input tensor
        (``cse``) counts one tensor per cell as it runs. Indices without the cell and input-edge decisions (a
        partial cost-model query) are returned as they are.
        """
        if any(n not in idx for n in ("cells", *INPUT_EDGES["in0"], *INPUT_EDGES["in1"])):
            return idx
        uses = input_edges_used({n: self.preset.ops[idx[n]] for names in INPUT_EDGES.values() for n in names})
        ks = self.decision("cells").choices
        live = sum(live_cells(ks[idx["cells"]], uses["in0"], uses["in1"]))
        if live == ks[idx["cells"]]:
            return idx
        out = {**idx, "cells": ks.index(live)}
        if uses["in0"] and not uses["in1"]:
            for j in range(NODES):
                out[f"n{j}.in0"], out[f"n{j}.in1"] = idx[f"n{j}.in1"], idx[f"n{j}.in0"]
        return out

    def build(self, arch: Architecture, num_labels: int = 2, pair: bool = False) -> nn.Module:
        self.indices(arch)  # validates the choices
        return AdaBertModel(self, arch, num_labels, pair)


def input_edges_used(choices: dict) -> dict[str, bool]:
    """Whether any non-zero edge reads each cell input (``{"in0": ..., "in1": ...}``) under ``choices``."""
    return {src: any(choices[n] != "zero" for n in names) for src, names in INPUT_EDGES.items()}


def arch_live_cells(arch: Architecture) -> list[bool]:
    """:func:`live_cells` of an AdaBERT architecture (which of its cells its output depends on)."""
    uses = input_edges_used(arch.choices)
    return live_cells(int(arch.choices["cells"]), uses["in0"], uses["in1"])


def live_cells(cells: int, uses_in0: bool, uses_in1: bool) -> list[bool]:
    """Which of ``cells`` cells the model's output depends on, given whether the cells read their in0 input (the
    cell two back) and their in1 input (the previous cell) through any non-zero edge.

    The last cell is live; cell k is live when the next cell is live and reads in1, or the one after it is live and
    reads in0. A model without in1 edges runs every other cell; one without input edges at all runs only the last
    (its nodes see zeros). The model skips the dead cells at inference and the predictor prices the live ones.

    >>> live_cells(4, True, False), live_cells(3, False, True), live_cells(3, False, False)
    ([False, True, False, True], [True, True, True], [False, False, True])
    """
    live = [False] * cells
    live[-1] = True
    for k in range(cells - 2, -1, -1):
        live[k] = (uses_in1 and live[k + 1]) or (uses_in0 and k + 2 < cells and live[k + 2])
    return live


class Cell(nn.Module):
    """One derived cell: only the non-zero edges are built."""

    def __init__(self, space: AdaBertSpace, arch: Architecture) -> None:
        super().__init__()
        self.edges = nn.ModuleDict()
        self.wiring: list[list[tuple[str, str]]] = [[] for _ in range(NODES)]  # node -> [(edge key, source)]
        for name, j, src in edge_names():
            t = arch.choices[name]
            if t != "zero":
                key = name.replace(".", "_")
                self.edges[key] = build_op(space.op(t))
                self.wiring[j].append((key, src))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = {"in0": s0, "in1": s1}
        nodes = []
        for j in range(NODES):
            acc = torch.zeros_like(s0)  # (B, T, H)
            for key, src in self.wiring[j]:
                acc = acc + self.edges[key](states[src], mask)
            states[f"n{j}"] = acc
            nodes.append(acc)
        return torch.stack(nodes, 0).mean(0)  # (B, T, H)


def cell_inputs(embedding: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor,
                token_type_ids: torch.Tensor | None, pair: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The first cell's two inputs: sentence A and sentence B embedded (the same sentence twice if not a pair)."""
    types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
    e = embedding(input_ids, types)  # (B, T, H)
    if not pair:
        return e, e
    b_mask = types.to(torch.float32).unsqueeze(-1) * mask.unsqueeze(-1)  # (B, T, 1)
    return e * (mask.unsqueeze(-1) - b_mask), e * b_mask


class AdaBertModel(nn.Module):
    """Embedding -> K cells -> masked-mean head. ``forward(input_ids, attention_mask, token_type_ids=None)``.

    ``forward`` runs only the cells its output depends on (:func:`live_cells`); ``features`` runs them all (the
    probes of knowledge distillation read every cell).
    """

    def __init__(self, space: AdaBertSpace, arch: Architecture, num_labels: int, pair: bool) -> None:
        super().__init__()
        self.pair, self.num_labels = pair, num_labels
        self.embedding = build_op(space.embed_spec())
        self.cells = nn.ModuleList(Cell(space, arch) for _ in range(arch.choices["cells"]))
        self.head = build_op(OpSpec.make("head", space.preset.hidden, labels=num_labels))
        self.live = arch_live_cells(arch)

    def _outputs(self, input_ids, attention_mask, token_type_ids, live: list[bool]
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The embedding's output (sentence A view) and every cell's, running the cells ``live`` marks (a skipped
        cell's slot holds that first output, which no live cell reads); and the float mask."""
        mask = attention_mask.to(torch.float32)  # (B, T)
        s0, s1 = cell_inputs(self.embedding, input_ids, mask, token_type_ids, self.pair)
        outs = [s0]
        for cell, on in zip(self.cells, live):
            s0, s1 = s1, cell(s0, s1, mask) if on else outs[0]  # a dead cell's output: only its shape is read
            outs.append(s1)
        return outs, mask

    def features(self, input_ids, attention_mask, token_type_ids=None) -> list[torch.Tensor]:
        """Outputs of the embedding (sentence A view) and of every cell, each (B, T, H)."""
        return self._outputs(input_ids, attention_mask, token_type_ids, [True] * len(self.cells))[0]

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        outs, mask = self._outputs(input_ids, attention_mask, token_type_ids, self.live)
        return self.head(outs[-1], mask)


__all__ = ["AdaBertSpace", "AdaBertPreset", "AdaBertModel", "ADABERT_OPS", "NODES", "edge_names", "cell_inputs",
           "live_cells", "arch_live_cells", "input_edges_used", "INPUT_EDGES", "get_space"]
