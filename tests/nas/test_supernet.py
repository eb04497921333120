"""nas.adabert.supernet: single-path sampling runs K cells, gradients pass straight through, the sampled path is the
derived model, and the student's embeddings start from the teacher's."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from nas.adabert.supernet import SuperNet, init_embedding, probe_logits_of
from nas.arch import Architecture
from nas.spaces import get_space
from nas.spaces.adabert import edge_names
from nas.spaces.ops import build_op
from nas.teacher import TeacherError

LABELS = 3


@pytest.fixture(scope="module")
def space():
    return get_space("adabert", "tiny")  # vocab 1000, hidden 16, K in 1..3


@pytest.fixture
def net(space):
    torch.manual_seed(0)
    return SuperNet(space, num_labels=LABELS, pair=False)


def make_batch(seed: int = 0, b: int = 4, t: int = 10, pair: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 1000, (b, t), generator=g)  # (B, T)
    mask = torch.ones(b, t, dtype=torch.long)  # (B, T)
    mask[0, t // 2:] = 0
    ids[0, t // 2:] = 0
    types = torch.zeros_like(ids)
    if pair:
        types[:, t // 3:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
            "labels": torch.randint(0, LABELS, (b,), generator=g)}


def straight_through(net: SuperNet, choices: dict[str, object], tau: float = 1.0) -> dict[str, torch.Tensor]:
    """One-hot samples of the given choices whose gradient is that of softmax(logits / tau)."""
    out = {}
    for d in net.space.decisions():
        soft = F.softmax(net.logits_of(d.name) / tau, -1)
        hard = F.one_hot(torch.tensor(d.index(choices[d.name])), len(d.choices)).to(soft.dtype)
        out[d.name] = hard - soft.detach() + soft
    return out


def arch_of(space, cells: int, op_of_edge) -> Architecture:
    choices = {"cells": cells, **{name: op_of_edge(i) for i, (name, _, _) in enumerate(edge_names())}}
    return Architecture(space.name, space.version, space.preset.name, choices)


def count_cell_calls(net: SuperNet) -> list[int]:
    calls = [0] * len(net.cells)
    for i, cell in enumerate(net.cells):
        cell.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_hard_sample_runs_only_k_cells(space, net, k):
    calls = count_cell_calls(net)
    arch = arch_of(space, k, lambda i: space.preset.ops[i % 9])
    logits, got_k = net(make_batch(), straight_through(net, arch.choices))
    assert got_k == k and len(logits) == k
    assert all(t.shape == (4, LABELS) and torch.isfinite(t).all() for t in logits)
    assert calls == [1] * k + [0] * (len(net.cells) - k)


def test_gradients_reach_every_sampled_decision_and_the_weights(space, net):
    ops = space.preset.ops
    arch = arch_of(space, 2, lambda i: ops[i % 9])  # no "zero" edge (it is ops[9])
    batch = make_batch(1)
    logits, k = net(batch, straight_through(net, arch.choices, tau=0.7))
    loss = sum(F.cross_entropy(x, batch["labels"]) for x in logits)
    loss.backward()
    for d in space.decisions():
        g = net.logits_of(d.name).grad
        assert g is not None and g.abs().sum() > 0, d.name
    assert net.embedding.word.weight.grad.abs().sum() > 0 and net.head.classifier.weight.grad is not None
    assert net.probes[0].weight.grad is not None and net.probes[1].weight.grad is None  # K - 1 probes + head
    for name, _, _ in edge_names():
        edge = net.cells[0].edges[name.replace(".", "_")]
        chosen = ops.index(arch.choices[name])
        for i, op in enumerate(edge.ops):
            grads = [p.grad for p in op.parameters()]
            if i == chosen:
                assert all(g is not None for g in grads), name  # the sampled op learns
            else:
                assert all(g is None for g in grads), name  # the others did not run
    assert all(p.grad is None for p in net.cells[2].parameters())  # cell 3 is beyond K


def test_gumbel_samples_give_gradients_to_their_decisions(space, net):
    torch.manual_seed(5)
    hard = net.sample(tau=1.0)
    for name, h in hard.items():
        assert h.shape == (len(space.decision(name).choices),)
        assert torch.allclose(h, F.one_hot(h.argmax(), len(h)).float())
    batch = make_batch(2)
    logits, k = net(batch, hard)
    F.cross_entropy(logits[-1], batch["labels"]).backward()
    ops = space.preset.ops
    assert net.logits_of("cells").grad.abs().sum() > 0
    for name, _, _ in edge_names():
        if ops[int(hard[name].argmax())] != "zero":
            assert net.logits_of(name).grad.abs().sum() > 0, name


def test_the_sampled_path_is_the_derived_model(space, net):
    """With one-hot samples the supernet computes exactly the derived AdaBertModel (zero edges add nothing)."""
    ops = space.preset.ops
    arch = arch_of(space, 3, lambda i: ops[[9, 0, 9, 4, 6, 9, 7, 8, 9][i]])  # zero on 4 edges
    net.train()
    net(make_batch(9, b=8), straight_through(net, arch.choices))  # move the BatchNorm statistics off their init
    net.eval()
    model = space.build(arch, num_labels=LABELS, pair=False).eval()
    model.embedding.load_state_dict(net.embedding.state_dict())
    model.head.load_state_dict(net.head.state_dict())
    for c in range(3):
        for name, _, _ in edge_names():
            key = name.replace(".", "_")
            if arch.choices[name] != "zero":
                op = net.cells[c].edges[key].ops[ops.index(arch.choices[name])]
                model.cells[c].edges[key].load_state_dict(op.state_dict())
            else:
                assert key not in model.cells[c].edges
    batch = make_batch(3)
    with torch.no_grad():
        hard = {n: F.one_hot(torch.tensor(i), len(space.decision(n).choices)).float()
                for n, i in space.indices(arch).items()}
        got, k = net(batch, hard)
        want = probe_logits_of(model, net.probes[:k - 1], batch)
        direct = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert k == 3 and len(got) == len(want) == 3
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(got[-1], direct, atol=1e-5)


def test_all_zero_edges_make_the_output_input_independent(space, net):
    arch = arch_of(space, 2, lambda i: "zero")
    net.eval()
    with torch.no_grad():
        logits, _ = net(make_batch(4), straight_through(net, arch.choices))
    for x in logits:
        assert torch.allclose(x, x[:1].expand_as(x))  # every row the same: nothing of the input got through
    ops = space.preset.ops
    with torch.no_grad():
        logits, _ = net(make_batch(4), straight_through(net, arch_of(space, 2, lambda i: ops[8]).choices))  # identity
    assert not torch.allclose(logits[-1], logits[-1][:1].expand_as(logits[-1]))


def test_same_seed_same_samples(space, net):
    torch.manual_seed(11)
    a = net.sample(0.5)
    torch.manual_seed(11)
    b = net.sample(0.5)
    assert all(torch.equal(a[n], b[n]) for n in a)
    draws = []
    for seed in range(5):
        torch.manual_seed(seed)
        draws.append(tuple(int(h.argmax()) for h in net.sample(0.5).values()))
    assert len(set(draws)) > 1  # the seed matters
    torch.manual_seed(0)
    twin = SuperNet(space, num_labels=LABELS, pair=False)
    for (n1, p1), (n2, p2) in zip(net.state_dict().items(), twin.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_pair_inputs(space):
    torch.manual_seed(0)
    net = SuperNet(space, num_labels=2, pair=True)
    batch = make_batch(5, pair=True)
    batch["labels"] = batch["labels"] % 2
    torch.manual_seed(1)
    logits, k = net(batch, net.sample(1.0))
    assert len(logits) == k and all(x.shape == (4, 2) and torch.isfinite(x).all() for x in logits)
    F.cross_entropy(logits[-1], batch["labels"]).backward()
    assert net.embedding.word.weight.grad.abs().sum() > 0
    # sentence B is read: with identity edges, changing only its tokens changes the output
    other = {**batch, "input_ids": batch["input_ids"].clone()}
    other["input_ids"][1:, -2] = 7  # rows 1.. are unpadded; position 8 is in sentence B
    hard = straight_through(net, arch_of(space, 1, lambda i: "identity").choices)
    net.eval()
    with torch.no_grad():
        assert not torch.allclose(net(batch, hard)[0][-1], net(other, hard)[0][-1])


# ------------------------------------------------------------------------------------------- init_embedding
def _tables(g, width: int, vocab: int = 1000, positions: int = 512, rank: int | None = None) -> dict:
    basis = torch.randn(rank or width, width, generator=g)

    def table(rows):
        return torch.randn(rows, rank or width, generator=g) @ basis if rank else torch.randn(rows, width, generator=g)

    return {"word_embeddings": table(vocab), "position_embeddings": table(positions),
            "token_type_embeddings": table(2)}


def test_init_embedding_copies_same_width_tables(space):
    g = torch.Generator().manual_seed(0)
    emb = build_op(space.embed_spec())
    tables = _tables(g, 16)
    norm = {"weight": torch.rand(16, generator=g), "bias": torch.rand(16, generator=g)}
    note = init_embedding(emb, tables, norm)
    assert "copied" in note
    assert torch.equal(emb.word.weight, tables["word_embeddings"])
    assert torch.equal(emb.position.weight, tables["position_embeddings"][:128])  # the student covers 128 positions
    assert torch.equal(emb.token_type.weight, tables["token_type_embeddings"])
    assert torch.equal(emb.norm.weight, norm["weight"]) and torch.equal(emb.norm.bias, norm["bias"])


def test_init_embedding_projects_a_wider_teacher_onto_its_principal_directions(space):
    g = torch.Generator().manual_seed(1)
    emb = build_op(space.embed_spec())
    tables = _tables(g, 48, rank=16)  # 48 wide, all in one 16-dim subspace: the projection loses nothing
    note = init_embedding(emb, tables, {"weight": torch.rand(48), "bias": torch.rand(48)})
    assert "48" in note and "16" in note
    for name, module, rows in (("word_embeddings", emb.word, 1000), ("position_embeddings", emb.position, 128),
                               ("token_type_embeddings", emb.token_type, 2)):
        t = tables[name][:rows].double()
        w = module.weight.detach().double()
        assert w.shape == (rows, 16)
        gram, want = w @ w.T, t @ t.T  # distances and angles between the rows are kept
        assert float((gram - want).norm() / want.norm()) < 1e-4, name
    assert torch.equal(emb.norm.weight, torch.ones(16))  # a LayerNorm of another width is not copied


def test_init_embedding_refusals(space):
    g = torch.Generator().manual_seed(2)
    emb = build_op(space.embed_spec())
    with pytest.raises(TeacherError, match="vocabulary has 30522 tokens.*1000"):
        init_embedding(emb, _tables(g, 16, vocab=30522))
    with pytest.raises(TeacherError, match="narrower"):
        init_embedding(emb, _tables(g, 8))
