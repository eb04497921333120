"""ONNX export: onnxruntime agrees with torch on sampled architectures at shapes other than the export shapes,
and ``export_cli`` exports trained weights, checks parity and refuses what it cannot stand behind."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nas.export
from nas.export import ExportError, export_arch, export_cli, export_model, ort_session, space_inputs
from nas.modeling import ModelError, save_pretrained
from nas.spaces import get_space

N_ARCHS = 30  # sampled architectures per (space, input kind)
CASES = [("adabert", False), ("adabert", True), ("nasbert", False)]
CHECK_SHAPES = [(3, 11), (1, 29)]  # (batch, seq_len): neither is the export example's (2, 16); row 0 is padded


@pytest.mark.parametrize("space_name, pair", CASES, ids=["adabert-single", "adabert-pair", "nasbert"])
@pytest.mark.parametrize("seed", range(N_ARCHS))
def test_onnxruntime_matches_torch(space_name, pair, seed, tmp_path):
    space = get_space(space_name, "tiny")
    arch = space.sample(seed)
    torch.manual_seed(seed)
    model = space.build(arch, num_labels=2 + seed % 3, pair=pair).eval()
    path = export_model(model, space, tmp_path / "m.onnx", pair=pair)
    sess = ort_session(path)
    expected_inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if pair or space_name == "nasbert" else [])
    assert [i.name for i in sess.get_inputs()] == expected_inputs
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    for batch, seq_len in CHECK_SHAPES:
        inputs = space_inputs(space, batch, seq_len, pair=pair, seed=seed + 1)
        assert inputs["attention_mask"][0].sum() < seq_len  # a padded row is part of the check
        with torch.no_grad():
            ref = model(*inputs.values()).numpy()
        got = sess.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]
        assert got.shape == ref.shape == (batch, 2 + seed % 3)
        assert np.abs(got - ref).max() <= 1e-4, (arch.key, batch, seq_len)


def test_export_arch_is_seeded(tmp_path):
    arch = get_space("adabert", "tiny").sample(0)
    a = export_arch(arch, tmp_path / "a.onnx", seed=3).read_bytes()
    assert a == export_arch(arch, tmp_path / "b.onnx", seed=3).read_bytes()


# ------------------------------------------------------------------------------------------- export_cli
@pytest.fixture
def arch_file(tmp_path):
    space = get_space("nasbert", "tiny")
    arch = space.sample(4)
    return space, arch, arch.save(tmp_path / "arch.json")


def test_export_cli_random_weights(arch_file, tmp_path):
    _, arch, path = arch_file
    out = tmp_path / "sub" / "model.onnx"
    info = export_cli(path, out, num_labels=4)
    assert out.is_file() and info["out"] == str(out) and info["onnx_bytes"] == out.stat().st_size
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and info["outputs"] == ["logits"]
    assert info["num_labels"] == 4 and info["weights"] is None
    assert info["parity_max_abs_diff"] <= 1e-4
    assert (info["parity_batch"], info["parity_seq_len"]) != (2, 16)
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]  # no temporary file left behind


def test_export_cli_adabert_single_has_no_token_types(tmp_path):
    arch = get_space("adabert", "tiny").sample(1)
    info = export_cli(arch.save(tmp_path / "a.json"), tmp_path / "a.onnx")
    assert info["inputs"] == ["input_ids", "attention_mask"] and info["pair"] is False
    info = export_cli(tmp_path / "a.json", tmp_path / "p.onnx", pair=True)
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]


def test_export_cli_with_trained_weights(arch_file, tmp_path):
    space, arch, path = arch_file
    torch.manual_seed(11)
    model = space.build(arch, num_labels=3, pair=True).eval()
    save_pretrained(model, arch, tmp_path / "trained", num_labels=3, pair=True)
    out = tmp_path / "trained.onnx"
    info = export_cli(path, out, weights=tmp_path / "trained")  # num_labels/pair come from the model's config
    assert info["num_labels"] == 3 and info["pair"] is True and info["weights"] == str(tmp_path / "trained")
    inputs = space_inputs(space, 2, 9, pair=True, seed=5)
    with torch.no_grad():
        ref = model(*inputs.values()).numpy()
    got = ort_session(out).run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    assert np.abs(got - ref).max() <= 1e-4  # the trained weights, not fresh random ones


def test_export_cli_refuses_weights_of_another_architecture(arch_file, tmp_path):
    space, arch, path = arch_file
    other = space.sample(5)
    assert other != arch
    save_pretrained(space.build(other), other, tmp_path / "other", num_labels=2, pair=False)
    with pytest.raises(ExportError, match="trained for another architecture than .*arch.json .*choice"):
        export_cli(path, tmp_path / "x.onnx", weights=tmp_path / "other")
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ModelError, match="no such model folder"):
        export_cli(path, tmp_path / "x.onnx", weights=tmp_path / "nowhere")


def test_export_cli_refuses_bad_parity_and_leaves_nothing(arch_file, tmp_path, monkeypatch):
    _, _, path = arch_file
    monkeypatch.setattr(nas.export, "check_parity", lambda *a, **k: 0.5)
    with pytest.raises(ExportError, match=r"differs from torch by 0.5 \(> 0.0001\)"):
        export_cli(path, tmp_path / "bad.onnx")
    monkeypatch.setattr(nas.export, "check_parity", lambda *a, **k: float("nan"))
    with pytest.raises(ExportError, match="differs from torch by nan"):
        export_cli(path, tmp_path / "bad.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json"]


def test_export_cli_output_errors(arch_file, tmp_path):
    _, _, path = arch_file
    with pytest.raises(ExportError, match="is a folder; pass a file name"):
        export_cli(path, tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="cannot write"):
        export_cli(path, tmp_path / "file" / "m.onnx")
