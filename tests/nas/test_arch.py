"""Architecture files: exact JSON round trips and validation errors that name the field and the fix."""
from __future__ import annotations

import json

import pytest

from nas.arch import ArchError, Architecture
from nas.spaces import SPACE_REGISTRY, get_space


@pytest.mark.parametrize("space", sorted(SPACE_REGISTRY))
@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_json_round_trip_is_exact(space, preset, tmp_path):
    s = get_space(space, preset)
    for seed in range(5):
        a = s.sample(seed)
        assert Architecture.from_json(a.to_json()) == a
        path = a.save(tmp_path / f"{seed}.json")
        b = Architecture.load(path)
        assert b == a and b.to_json() == a.to_json() and b.key == a.key
        assert path.read_text() == a.to_json() + "\n"
        assert list(b.choices) == [d.name for d in s.decisions()]  # decision order is kept


def test_key_is_canonical_and_compact():
    a = get_space("nasbert", "tiny").sample(0)
    shuffled = Architecture(a.space, a.version, a.preset, dict(reversed(list(a.choices.items()))))
    assert shuffled.key == a.key
    assert " " not in a.key and json.loads(a.key) == a.to_dict()


@pytest.fixture
def good() -> dict:
    return get_space("nasbert", "tiny").sample(0).to_dict()


def _expect(d, fragment: str, tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(d) if not isinstance(d, str) else d)
    with pytest.raises(ArchError) as e:
        Architecture.load(path)
    msg = str(e.value)
    assert msg.startswith(str(path)), msg  # names the file
    assert fragment in msg, msg
    assert "\n" not in msg
    return msg


def test_unknown_op_names_the_decision_and_the_candidates(good, tmp_path):
    good["choices"]["layer2.op"] = "conv:k=9"
    msg = _expect(good, "field 'choices.layer2.op'", tmp_path)
    assert "'conv:k=9' is not a candidate; choose one of" in msg and "ffn:inner=32" in msg


def test_wrong_number_of_decisions(good, tmp_path):
    del good["choices"]["layer3.op"]
    _expect(good, "field 'choices' has 5 decisions, space 'nasbert' (preset 'tiny') needs 6; missing ['layer3.op']",
            tmp_path)
    good["choices"]["layer3.op"], good["choices"]["layer9.op"] = "identity", "identity"
    _expect(good, "unknown ['layer9.op']", tmp_path)


def test_wrong_space_version_preset(good, tmp_path):
    _expect(dict(good, space="bert"), "field 'space'/'preset': unknown space 'bert'; known spaces: adabert, nasbert",
            tmp_path)
    _expect(dict(good, version=2), "field 'version' is 2 but space 'nasbert' is at version 1", tmp_path)
    _expect(dict(good, preset="huge"), "field 'space'/'preset': space 'nasbert' has no preset 'huge'", tmp_path)
    _expect(dict(good, space=["nasbert"]), "field 'space' must be a string", tmp_path)
    _expect(dict(good, version="1"), "field 'version' must be an integer", tmp_path)
    _expect(dict(good, version=True), "field 'version' must be an integer", tmp_path)


def test_arch_of_another_preset_is_refused(good, tmp_path):
    _expect(dict(good, preset="small"), "needs 12", tmp_path)


def test_choice_types_are_strict(good, tmp_path):
    good["choices"]["block0.hidden"] = float(good["choices"]["block0.hidden"])
    _expect(good, "field 'choices.block0.hidden'", tmp_path)
    ada = get_space("adabert", "tiny").sample(0).to_dict()
    ada["choices"]["cells"] = True
    _expect(ada, "field 'choices.cells': decision 'cells': True is not a candidate", tmp_path)


def test_structure_errors(good, tmp_path):
    _expect({"space": "nasbert", "version": 1}, "missing field 'choices'", tmp_path)
    _expect(dict(good, extra=1), "unknown field(s) ['extra']", tmp_path)
    _expect(dict(good, choices=[1, 2]), "field 'choices' must be an object", tmp_path)
    _expect([good], "expected a JSON object", tmp_path)


def test_file_errors(tmp_path):
    _expect('{"space": "nasbert",', "not valid JSON", tmp_path)
    _expect("", "not valid JSON", tmp_path)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ArchError, match="cannot read the architecture file"):
        Architecture.load(tmp_path / "bin.json")
    with pytest.raises(ArchError, match="no such architecture file; create one with `hwnas sample --out"):
        Architecture.load(tmp_path / "missing.json")
    with pytest.raises(ArchError, match="is a folder"):
        Architecture.load(tmp_path)


def test_preset_may_be_omitted_and_means_the_default():
    s = get_space("adabert")
    d = s.sample(0).to_dict()
    del d["preset"]
    assert Architecture.from_dict(d).preset == s.default_preset
