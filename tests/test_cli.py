"""The ``hwnas`` command: env, list, sample, info, export, and one-line errors (exit 2, no traceback)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import main
from nas.spaces import OP_REGISTRY, SPACE_REGISTRY, get_space

HWNAS = Path(sys.executable).with_name("hwnas")  # the console script installed next to this interpreter


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *argv: str) -> dict:
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("hwnas: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_env(capsys):
    fp = run_json(capsys, "env")
    for key in ("cpu_model", "cores", "python", "torch", "onnxruntime"):
        assert key in fp
    assert fp["threads"] is None


def test_list(capsys):
    spaces = run_json(capsys, "list", "spaces")
    assert set(spaces) == set(SPACE_REGISTRY)
    assert spaces["nasbert"]["presets"] == ["paper", "small", "tiny"] and spaces["adabert"]["version"] == 1
    ops = run_json(capsys, "list", "ops")
    assert set(ops) == set(OP_REGISTRY) and ops["conv"]["params"] == ["dilation", "k"] and ops["head"]["fixed"]
    assert all(r["doc"] for r in ops.values())
    assert isinstance(run_json(capsys, "list", "profiles"), dict)  # may be empty
    rc, out, _ = run(capsys, "list", "ops")
    assert rc == 0 and out.splitlines()[0].startswith("conv:dilation,k")
    rc, out, err = run(capsys, "list", "profiles")
    assert rc == 0 and not err and "{" not in out  # one readable line per profile, not a dict
    for line, name in zip(out.splitlines(), sorted(run_json(capsys, "list", "profiles"))):
        assert line.startswith(name + " ") and ("e2e rows" in line or "unreadable" in line)


def test_sample_is_deterministic(capsys, tmp_path):
    a = run_json(capsys, "sample", "--space", "adabert", "--preset", "tiny", "--seed", "4")
    assert a == run_json(capsys, "sample", "--space", "adabert", "--preset", "tiny", "--seed", "4")
    assert a != run_json(capsys, "sample", "--space", "adabert", "--preset", "tiny", "--seed", "5")
    assert a == get_space("adabert", "tiny").sample(4).to_dict()
    rc, out, _ = run(capsys, "sample", "--space", "nasbert", "--preset", "tiny", "--out", tmp_path / "a.json")
    assert rc == 0 and out.strip() == f"wrote {tmp_path / 'a.json'}"
    assert json.loads((tmp_path / "a.json").read_text()) == get_space("nasbert", "tiny").sample(0).to_dict()
    rc, out, _ = run(capsys, "sample", "--space", "nasbert")  # default preset, printed
    assert rc == 0 and json.loads(out)["preset"] == "small"


def test_info(capsys, tmp_path):
    path = get_space("nasbert", "tiny").sample(1).save(tmp_path / "a.json")
    info = run_json(capsys, "info", path, "--batch", "2", "--seq-len", "32", "--num-labels", "3")
    assert info["space"] == "nasbert" and info["batch"] == 2 and info["seq_len"] == 32 and info["num_labels"] == 3
    assert info["params"] == info["analytic_params"] > 0 and info["flops"] > 0
    rc, out, _ = run(capsys, "info", path)
    assert rc == 0 and "params: " in out and "choices:" in out and "seq_len: 128" in out


def test_export_and_weights_round_trip(capsys, tmp_path):
    import numpy as np
    import torch

    from nas.export import ort_session, space_inputs
    from nas.modeling import save_pretrained

    space = get_space("adabert", "tiny")
    arch = space.sample(2)
    path = arch.save(tmp_path / "arch.json")
    info = run_json(capsys, "export", path, "--out", tmp_path / "m.onnx", "--pair")
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and info["parity_max_abs_diff"] <= 1e-4

    torch.manual_seed(1)
    model = space.build(arch, num_labels=4, pair=False).eval()
    save_pretrained(model, arch, tmp_path / "model", num_labels=4, pair=False)
    info = run_json(capsys, "export", path, "--out", tmp_path / "t.onnx", "--weights", tmp_path / "model")
    assert info["num_labels"] == 4 and info["pair"] is False and info["inputs"] == ["input_ids", "attention_mask"]
    inputs = space_inputs(space, 2, 7, seed=9)
    with torch.no_grad():
        ref = model(*inputs.values()).numpy()
    got = ort_session(tmp_path / "t.onnx").run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    assert np.abs(got - ref).max() <= 1e-4
    rc, out, _ = run(capsys, "export", path, "--out", tmp_path / "u.onnx")
    assert rc == 0 and "parity_max_abs_diff: " in out


@pytest.mark.parametrize("content, fragments", [
    (None, ["no such architecture file", "hwnas sample --out"]),
    ("{oops", ["not valid JSON"]),
    ('{"space": "bert", "version": 1, "choices": {}}', ["field 'space'/'preset'", "unknown space 'bert'"]),
    ('{"space": "nasbert", "version": 3, "preset": "tiny", "choices": {}}', ["field 'version' is 3"]),
    ('{"space": "nasbert", "version": 1, "preset": "huge", "choices": {}}', ["no preset 'huge'"]),
    ('{"space": "nasbert", "version": 1, "preset": "tiny", "choices": {}}', ["field 'choices' has 0 decisions"]),
])
@pytest.mark.parametrize("verb", ["info", "export"])
def test_bad_arch_files_give_one_line(capsys, tmp_path, content, fragments, verb):
    path = tmp_path / "arch.json"
    if content is not None:
        path.write_text(content)
    extra = ["--out", tmp_path / "m.onnx"] if verb == "export" else []
    rc, out, err = run(capsys, verb, path, *extra)
    assert_one_line_error(rc, err, str(path), *fragments)
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_op_in_arch_file(capsys, tmp_path):
    d = get_space("adabert", "tiny").sample(0).to_dict()
    d["choices"]["n1.in0"] = "conv:dilation=1,k=9"
    (tmp_path / "a.json").write_text(json.dumps(d))
    rc, _, err = run(capsys, "info", tmp_path / "a.json")
    assert_one_line_error(rc, err, "field 'choices.n1.in0'", "'conv:dilation=1,k=9' is not a candidate")


def test_other_errors_give_one_line(capsys, tmp_path):
    assert_one_line_error(*run(capsys, "sample", "--space", "bogus")[::2], "unknown space 'bogus'")
    assert_one_line_error(*run(capsys, "sample", "--space", "adabert", "--preset", "x")[::2], "no preset 'x'")
    path = get_space("nasbert", "tiny").sample(0).save(tmp_path / "a.json")
    assert_one_line_error(*run(capsys, "export", path, "--out", tmp_path / "m.onnx", "--weights",
                               tmp_path / "none")[::2], "no such model folder")
    assert_one_line_error(*run(capsys, "export", path, "--out", tmp_path)[::2], "is a folder")


def test_console_script_error_and_import_cost(tmp_path):
    assert HWNAS.is_file(), f"console script not installed next to {sys.executable}; run `make venv`"
    r = subprocess.run([str(HWNAS), "info", str(tmp_path / "missing.json")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("hwnas: error: ") and "Traceback" not in r.stderr
    # `hwnas --help` stays instant: importing the CLI pulls in no torch
    r = subprocess.run([sys.executable, "-c", "import sys, nas.cli; print('torch' in sys.modules)"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


# ------------------------------------------------------------------------------------------ training verbs
PROFILE = "intel-xeon-2c_ort-1.31_t1"


def fake_teacher(folder: Path, num_labels: int = 5) -> Path:
    """The least ``load_teacher`` accepts (teacher.json and a cache): enough for the checks made before training."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    info = {"format": "hwnas.teacher/1", "num_labels": num_labels, "pair": False, "layers": 1}
    (folder / "teacher.json").write_text(json.dumps(info))
    save_file({"keys": torch.zeros(1, dtype=torch.int64), "logits": torch.zeros(1, num_labels),
               "probe_logits": torch.zeros(1, 2, num_labels)}, str(folder / "cache.safetensors"))
    return folder


@pytest.mark.parametrize("verb", ["teacher", "search"])
def test_training_verbs_help_shows_an_example(capsys, verb):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "example:" in out and f"hwnas {verb} " in out.split("example:")[1]
    assert "--out" in out and "--task" in out and "--train-limit" in out


def test_teacher_bad_data_gives_one_line(capsys, tmp_path):
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    dev.write_text("text,label\ngood,pos\nbad,neg\n")
    argv = ["teacher", "--train", train, "--dev", dev, "--label-column", "label", "--out", tmp_path / "t"]
    assert_one_line_error(*run(capsys, *argv, "--text-column", "text")[::2], f"--train {train}", "does not exist")
    train.write_text("text,label\nfine,pos\nawful,neg\n")
    assert_one_line_error(*run(capsys, *argv, "--text-column", "review")[::2], str(train), "no column 'review'",
                          "text, label")
    assert not (tmp_path / "t").exists()


def test_search_without_a_teacher_gives_one_line(capsys, tmp_path):
    rc, _, err = run(capsys, "search", "adabert", "--task", "demo", "--train-limit", "8", "--teacher",
                     tmp_path / "none", "--profile", PROFILE, "--budget-ms", "2", "--out", tmp_path / "r")
    assert_one_line_error(rc, err, f"{tmp_path / 'none'}: no such teacher folder", "hwnas teacher --out")
    assert not (tmp_path / "r").exists()


def test_search_with_an_infeasible_budget_gives_one_line(tmp_path):
    teacher = fake_teacher(tmp_path / "teacher")
    r = subprocess.run([str(HWNAS), "search", "adabert", "--task", "demo", "--train-limit", "8", "--teacher",
                        str(teacher), "--profile", PROFILE, "--budget-ms", "0.01", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=300)
    assert r.stdout == ""
    assert_one_line_error(r.returncode, r.stderr, "budget 0.01 ms is below the fastest adabert/small",
                          "raise --budget-ms to at least")
    assert not (tmp_path / "r").exists()


def test_a_predictor_reading_low_beyond_what_the_aim_absorbs_is_a_warning_in_the_report():
    from nas.engine_cli import aim_lines

    ok = aim_lines({"aimed_window": [0.91, 0.96], "predictor_under_q90": 0.04})
    bad = aim_lines({"aimed_window": [0.85, 0.90], "predictor_under_q90": 0.443})  # amd-epyc-2c_ort-1.31_t2's AdaBERT
    assert len(ok) == 1 and "reads up to 4.0 % low" in ok[0]
    assert len(bad) == 2 and "44.3 % low" in bad[0] and "more than the 10% a search leaves" in bad[1]
    assert aim_lines({"aimed_window": None}) == []


@pytest.mark.parametrize("engine, extra", [("adabert", ("--task", "demo", "--teacher", "t", "--budget-ms", "2")),
                                           ("nasbert", ("--corpus", "demo", "--budgets-ms", "2"))])
def test_a_negative_verify_is_one_line(capsys, tmp_path, engine, extra):
    rc, _, err = run(capsys, "search", engine, *extra, "--profile", "intel-xeon-2c_ort-1.31_t1", "--out",
                     tmp_path / "r", "--verify", "-1")
    assert_one_line_error(rc, err, "--verify must be 0 (off) or a number of measurements, got -1")
    assert not (tmp_path / "r").exists()
