"""Model folders (save_pretrained layout): exact round trips and clear refusals of broken folders."""
from __future__ import annotations

import json

import pytest
import torch

from nas import __version__
from nas.arch import ArchError
from nas.export import space_inputs
from nas.modeling import CONFIG, WEIGHTS, ModelError, load_config, load_pretrained, save_pretrained
from nas.spaces import get_space


@pytest.mark.parametrize("space_name, pair", [("adabert", True), ("adabert", False), ("nasbert", False)])
def test_round_trip_gives_the_same_model(space_name, pair, tmp_path):
    space = get_space(space_name, "tiny")
    arch = space.sample(2)
    torch.manual_seed(0)
    model = space.build(arch, num_labels=3, pair=pair)
    model.train()
    with torch.no_grad():  # make BatchNorm running statistics non-trivial: buffers must round-trip too
        model(*space_inputs(space, 4, 12, pair=pair).values())
    model.eval()
    folder = save_pretrained(model, arch, tmp_path / "m", num_labels=3, pair=pair, extra_card={"task": "sst2"})
    loaded, arch2, config = load_pretrained(folder)
    assert arch2 == arch and config.num_labels == 3 and config.pair is pair
    assert config.hwnas_version == __version__ and config.card == {"task": "sst2"}
    assert not loaded.training
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    inputs = space_inputs(space, 2, 10, pair=pair, seed=3)
    with torch.no_grad():
        assert torch.equal(model(*inputs.values()), loaded(*inputs.values()))
    card = (folder / "README.md").read_text()
    assert "task: sst2" in card and f"{space_name} (tiny)" in card
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CONFIG, WEIGHTS]


@pytest.fixture
def saved(tmp_path):
    space = get_space("nasbert", "tiny")
    arch = space.sample(0)
    return space, arch, save_pretrained(space.build(arch), arch, tmp_path / "m", num_labels=2, pair=False)


def test_missing_folder_and_files(saved, tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        load_pretrained(tmp_path / "nowhere")
    _, _, folder = saved
    (folder / WEIGHTS).unlink()
    with pytest.raises(ModelError, match=f"{WEIGHTS}: missing"):
        load_pretrained(folder)
    (folder / CONFIG).unlink()
    with pytest.raises(ModelError, match=f"{CONFIG}: missing"):
        load_pretrained(folder)


def test_corrupt_files(saved):
    _, _, folder = saved
    weights = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelError, match="cannot read the weights"):
        load_pretrained(folder)
    (folder / CONFIG).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_config(folder)


@pytest.mark.parametrize("field, value, fragment", [
    ("format", "other/1", "field 'format'"),
    ("num_labels", "2", "field 'num_labels' must be an integer"),
    ("num_labels", True, "field 'num_labels' must be an integer"),
    ("pair", 1, "field 'pair' must be true or false"),
    ("arch", None, "field 'arch' must be an object"),
])
def test_bad_config_fields(saved, field, value, fragment):
    _, _, folder = saved
    d = json.loads((folder / CONFIG).read_text())
    d[field] = value
    (folder / CONFIG).write_text(json.dumps(d))
    with pytest.raises(ModelError, match=fragment):
        load_pretrained(folder)


def test_invalid_arch_in_config_names_the_file(saved):
    _, _, folder = saved
    d = json.loads((folder / CONFIG).read_text())
    d["arch"]["choices"]["layer0.op"] = "nope"
    (folder / CONFIG).write_text(json.dumps(d))
    with pytest.raises(ArchError, match=r"config.json: field 'arch': field 'choices.layer0.op'"):
        load_pretrained(folder)


def test_weights_that_do_not_fit_the_architecture(saved):
    space, arch, folder = saved
    other = next(a for a in (space.sample(s) for s in range(1, 50)) if a.choices["layer0.op"] != arch.choices["layer0.op"])
    d = json.loads((folder / CONFIG).read_text())
    d["arch"] = other.to_dict()
    (folder / CONFIG).write_text(json.dumps(d))
    with pytest.raises(ModelError, match="weights do not fit the architecture"):
        load_pretrained(folder)
    d["arch"], d["num_labels"] = arch.to_dict(), 5
    (folder / CONFIG).write_text(json.dumps(d))
    with pytest.raises(ModelError, match=r"wrong shape \['head.classifier"):
        load_pretrained(folder)


def test_save_into_a_file_path_is_refused(tmp_path):
    space = get_space("adabert", "tiny")
    arch = space.sample(0)
    (tmp_path / "f").write_text("")
    with pytest.raises(ModelError, match="is not a folder"):
        save_pretrained(space.build(arch), arch, tmp_path / "f", num_labels=2, pair=False)
