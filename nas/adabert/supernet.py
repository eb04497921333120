"""AdaBERT's search network: K_max cells of mixed edges, architecture logits, Gumbel-softmax single-path sampling.

Every cell holds, on each of its 9 edges, one module per non-zero candidate op (weights are not shared between
cells; the *choice* of op per edge is, as in the ``adabert`` space). Each step draws one straight-through
Gumbel-softmax sample per decision (the 9 edges and the number of cells K): the forward pass runs only the sampled
op on each edge and only the first K cells (hard one-hot samples), and the sampled op's output is multiplied by its
one-hot entry, so gradients reach every logit through the soft sample (GDAS-style straight-through).

>>> from nas.spaces import get_space
>>> net = SuperNet(get_space("adabert", "tiny"), num_labels=2, pair=False)
>>> sorted(net.arch_logits)[:2], net.arch_logits["cells"].shape
(['cells', 'n0_in0'], torch.Size([3]))
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nas.spaces.adabert import NODES, AdaBertSpace, cell_inputs, edge_names
from nas.spaces.ops import OpSpec, build_op


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, T, H)`` states, ``(B, T)`` mask -> ``(B, H)`` mean over real tokens."""
    m = mask.unsqueeze(-1)  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class MixedEdge(nn.Module):
    """One edge of one cell: a module for every non-zero candidate; runs the sampled one."""

    def __init__(self, space: AdaBertSpace) -> None:
        super().__init__()
        self.templates = list(space.preset.ops)
        self.ops = nn.ModuleList(nn.Identity() if t == "zero" else build_op(space.op(t)) for t in self.templates)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, hard: torch.Tensor, index: int) -> torch.Tensor | None:
        """The sampled op's output times its (straight-through) one-hot entry; None for ``zero``."""
        if self.templates[index] == "zero":
            return None
        return self.ops[index](x, mask) * hard[index]  # (B, T, H)


class SuperCell(nn.Module):
    def __init__(self, space: AdaBertSpace) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({name.replace(".", "_"): MixedEdge(space) for name, _, _ in edge_names()})

    def forward(self, s0, s1, mask, hard: dict[str, torch.Tensor], index: dict[str, int]) -> torch.Tensor:
        states = {"in0": s0, "in1": s1}
        nodes = []
        for j in range(NODES):
            acc = torch.zeros_like(s0)  # (B, T, H)
            for name, jj, src in edge_names():
                if jj != j:
                    continue
                y = self.edges[name.replace(".", "_")](states[src], mask, hard[name], index[name])
                if y is not None:
                    acc = acc + y
            states[f"n{j}"] = acc
            nodes.append(acc)
        return torch.stack(nodes, 0).mean(0)  # (B, T, H)


class SuperNet(nn.Module):
    """Embedding -> K sampled cells -> head, with one auxiliary probe per cell for AdaBERT's probe KD.

    ``arch_logits`` (an ``nn.ParameterDict``: one vector per decision of the space) are the architecture
    parameters; :meth:`weight_parameters` are the rest.
    """

    def __init__(self, space: AdaBertSpace, num_labels: int, pair: bool) -> None:
        super().__init__()
        p = space.preset
        self.space, self.pair, self.num_labels = space, pair, num_labels
        self.embedding = build_op(space.embed_spec())
        self.cells = nn.ModuleList(SuperCell(space) for _ in range(p.max_cells))
        self.head = build_op(OpSpec.make("head", p.hidden, labels=num_labels))
        self.probes = nn.ModuleList(nn.Linear(p.hidden, num_labels) for _ in range(p.max_cells))
        self.arch_logits = nn.ParameterDict(
            {d.name.replace(".", "_"): nn.Parameter(1e-3 * torch.randn(len(d.choices))) for d in space.decisions()})

    def logits_of(self, name: str) -> torch.Tensor:
        return self.arch_logits[name.replace(".", "_")]

    def decision_names(self) -> list[str]:
        return [d.name for d in self.space.decisions()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_logits.parameters()}
        return [p for p in self.parameters() if id(p) not in arch and p.requires_grad]

    def probabilities(self) -> dict[str, torch.Tensor]:
        """softmax(logits) per decision: the search distribution the expected cost is taken under."""
        return {n: F.softmax(self.logits_of(n), -1) for n in self.decision_names()}

    def sample(self, tau: float) -> dict[str, torch.Tensor]:
        """One straight-through hard Gumbel-softmax sample per decision (uses torch's global RNG)."""
        return {n: F.gumbel_softmax(self.logits_of(n), tau=tau, hard=True) for n in self.decision_names()}

    def forward(self, batch: dict[str, torch.Tensor], hard: dict[str, torch.Tensor]
                ) -> tuple[list[torch.Tensor], int]:
        """Logits of every cell's probe and of the head (last) for the sampled path; and the sampled K."""
        mask = batch["attention_mask"].to(torch.float32)  # (B, T)
        s0, s1 = cell_inputs(self.embedding, batch["input_ids"], mask, batch["token_type_ids"], self.pair)
        index = {n: int(h.argmax()) for n, h in hard.items()}
        k = self.space.decision("cells").choices[index["cells"]]
        outs = []
        for cell in self.cells[:k]:
            s0, s1 = s1, cell(s0, s1, mask, hard, index)
            outs.append(s1)
        last = outs[-1] * hard["cells"][index["cells"]]  # (B, T, H); straight-through gradient to the K logits
        logits = [probe(masked_mean(o, mask)) for probe, o in zip(self.probes, outs[:-1])]
        return logits + [self.head(last, mask)], k


def probe_logits_of(model: nn.Module, probes: nn.ModuleList, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """A derived :class:`~nas.spaces.adabert.AdaBertModel`'s per-cell probe logits, the head's last."""
    mask = batch["attention_mask"].to(torch.float32)  # (B, T)
    feats = model.features(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[1:]  # K x (B, T, H)
    logits = [probe(masked_mean(f, mask)) for probe, f in zip(probes, feats[:-1])]
    return logits + [model.head(feats[-1], mask)]


@torch.no_grad()
def init_embedding(embedding: nn.Module, tables: dict[str, torch.Tensor], norm: dict[str, torch.Tensor] | None = None
                   ) -> str:
    """Initialise a student's embedding tables from the teacher's (word, position, token type).

    Same width: copied. Wider teacher: projected onto the top principal directions of its word embeddings
    (SVD), the same projection for all three tables. Returns a note of what was done.
    """
    from nas.teacher import TeacherError

    word = tables["word_embeddings"]
    if word.shape[0] != embedding.word.weight.shape[0]:
        raise TeacherError(f"the teacher's vocabulary has {word.shape[0]} tokens but the student space preset has "
                           f"{embedding.word.weight.shape[0]}; use a teacher with the BERT uncased vocabulary "
                           "(30522 tokens) or a preset whose vocab matches")
    dim = embedding.word.weight.shape[1]
    if word.shape[1] == dim:
        proj, note = None, "copied from the teacher"
    elif word.shape[1] > dim:
        centred = word - word.mean(0, keepdim=True)
        _, _, v = torch.linalg.svd(centred[:: max(1, len(word) // 8192)], full_matrices=False)  # (D, D)
        proj, note = v[:dim].T, f"teacher's {word.shape[1]} dims projected onto its top {dim} principal directions"
    else:
        raise TeacherError(f"the teacher's embeddings are {word.shape[1]} wide, narrower than the student's {dim}; "
                           "use a wider teacher or a preset with a smaller embed_dim")
    for name, module in (("word_embeddings", embedding.word), ("position_embeddings", embedding.position),
                         ("token_type_embeddings", embedding.token_type)):
        if name in tables:
            t = tables[name] if proj is None else tables[name] @ proj  # (rows, dim)
            n = min(len(t), module.weight.shape[0])
            module.weight[:n] = t[:n]
    if norm and proj is None:
        embedding.norm.weight.copy_(norm["weight"])
        embedding.norm.bias.copy_(norm["bias"])
    return note


__all__ = ["SuperNet", "MixedEdge", "SuperCell", "masked_mean", "probe_logits_of", "init_embedding"]
