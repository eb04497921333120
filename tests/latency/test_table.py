"""The profile folder on disk: durable appends, validation, compatibility, listing."""
import json

import pytest

from latency.device import cpu_slug, fingerprint, profile_name
from latency.table import (
    E2E_COLUMNS,
    OPS_COLUMNS,
    OPS_KEY,
    OPS_KINDS,
    SCHEMA,
    ProfileError,
    RowAppender,
    check_compatible,
    check_unique,
    fingerprint_hash,
    list_profiles,
    load_profile,
    read_meta,
    read_rows,
    write_meta,
)


def op_row(key="ffn:inner=32|h=16", batch=1, seq_len=16, p50=0.5):
    return {"op_key": key, "kind": key.split(":")[0], "hidden": 16, "batch": batch, "seq_len": seq_len,
            "latency_p50_ms": p50, "latency_p10_ms": p50 * 0.9, "latency_p90_ms": p50 * 1.1, "cv": 0.05,
            "n_runs": 7, "flops": 1000, "bytes": 4000}


def meta(threads=1, ort="1.31.1", cpu_id=None):
    device = {"cpu_model": "X", "cores": 2, "onnxruntime": ort, **({"cpu_id": cpu_id} if cpu_id else {})}
    return {"schema": SCHEMA, "created": "2026-01-01", "device": device,
            "backend": {"name": "onnxruntime", "version": ort, "threads": threads}, "protocol": {"min_runs": 5},
            "grid": {"batch": [1], "seq_len": [16]}, "spaces": [{"name": "nasbert", "preset": "tiny"}]}


def write_profile(folder, rows=()):
    folder.mkdir(parents=True, exist_ok=True)
    write_meta(folder, meta())
    with RowAppender(folder / "ops.csv", OPS_COLUMNS) as out:
        for r in rows:
            out.append(r)
    return folder


def test_append_and_read_back_typed(tmp_path):
    path = tmp_path / "ops.csv"
    with RowAppender(path, OPS_COLUMNS) as out:
        out.append(op_row(batch=1))
    with RowAppender(path, OPS_COLUMNS) as out:  # re-opened: no second header
        out.append(op_row(batch=8))
    rows = read_rows(path, OPS_COLUMNS, OPS_KINDS)
    assert [r["batch"] for r in rows] == [1, 8]
    assert rows[0]["op_key"] == "ffn:inner=32|h=16" and isinstance(rows[0]["n_runs"], int)
    assert path.read_text().count("op_key") == 1


def test_partial_last_line_is_dropped_and_cut_before_appending(tmp_path):
    path = tmp_path / "ops.csv"
    with RowAppender(path, OPS_COLUMNS) as out:
        out.append(op_row(batch=1))
    with open(path, "ab") as f:  # what a kill in the middle of a write would leave
        f.write(b'"ffn:inner=32|h=16",ffn,16,8,16,0.4')
    assert len(read_rows(path, OPS_COLUMNS, OPS_KINDS)) == 1
    with RowAppender(path, OPS_COLUMNS) as out:
        out.append(op_row(batch=8))
    rows = read_rows(path, OPS_COLUMNS, OPS_KINDS)
    assert [r["batch"] for r in rows] == [1, 8]
    assert path.read_text().endswith("\n")


def test_empty_file_from_a_kill_before_the_header(tmp_path):
    path = tmp_path / "e2e.csv"
    path.write_bytes(b"arch_js")  # partial header
    assert read_rows(path, E2E_COLUMNS) == []
    with RowAppender(path, E2E_COLUMNS):
        pass
    assert path.read_text() == ",".join(E2E_COLUMNS) + "\n"


def test_bad_header_names_the_file(tmp_path):
    path = tmp_path / "ops.csv"
    path.write_text("op,latency\nx,1\n")
    with pytest.raises(ProfileError, match=r"ops\.csv: bad header"):
        read_rows(path, OPS_COLUMNS, OPS_KINDS)
    with pytest.raises(ProfileError, match="bad header"):
        RowAppender(path, OPS_COLUMNS)


def test_bad_value_names_line_and_field(tmp_path):
    path = tmp_path / "ops.csv"
    with RowAppender(path, OPS_COLUMNS) as out:
        out.append({**op_row(), "latency_p50_ms": "fast"})
    with pytest.raises(ProfileError, match=r"line 2, field 'latency_p50_ms'"):
        read_rows(path, OPS_COLUMNS, OPS_KINDS)


def test_duplicates_are_refused(tmp_path):
    rows = [op_row(), op_row()]
    with pytest.raises(ProfileError, match="appears twice"):
        check_unique(tmp_path / "ops.csv", rows, OPS_KEY)


@pytest.mark.parametrize("content, match", [
    (None, "not a profile folder"),
    ("{not json", "not valid JSON"),
    (json.dumps({"schema": "other/2"}), "field 'schema'"),
    (json.dumps({"schema": SCHEMA, "device": {}}), "missing field 'backend'"),
])
def test_corrupt_or_foreign_profile_json(tmp_path, content, match):
    if content is not None:
        (tmp_path / "profile.json").write_text(content)
    with pytest.raises(ProfileError, match=match):
        read_meta(tmp_path)


def test_compatibility_check_names_the_difference():
    check_compatible("p", meta(), {**meta(), "created": "2027-01-01"})  # the date does not matter
    with pytest.raises(ProfileError, match=r"backend\.threads 1 -> 2.*--force-new"):
        check_compatible("p", meta(), meta(threads=2))
    with pytest.raises(ProfileError, match=r"device\.onnxruntime"):
        check_compatible("p", meta(), meta(ort="1.32.0"))
    assert fingerprint_hash(meta()) == fingerprint_hash({**meta(), "created": "x"})
    assert fingerprint_hash(meta()) != fingerprint_hash(meta(threads=2))
    # the allocator's environment is recorded for the reader, not compared (a profile without it reads the same)
    tuned = {**meta(), "device": {**meta()["device"], "allocator_env": {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}}}
    check_compatible("p", meta(), tuned)
    assert fingerprint_hash(tuned) == fingerprint_hash(meta())


def test_cpu_identity_is_compared_where_both_profiles_recorded_it():
    zen5, older = "AuthenticAMD 26/2/1 avx2 avx512f", "AuthenticAMD 23/49/0 avx2"
    with pytest.raises(ProfileError, match=r"device\.cpu_id 'AuthenticAMD 23/49/0 avx2' -> 'AuthenticAMD 26/2/1"):
        check_compatible("p", meta(cpu_id=older), meta(cpu_id=zen5))  # one masked name, two CPUs
    check_compatible("p", meta(cpu_id=zen5), meta(cpu_id=zen5))
    check_compatible("p", meta(), meta(cpu_id=zen5))  # a profile from before cpu_id: nothing to compare
    # ... and its hash (the one its predictor.json carries) is what it was
    assert fingerprint_hash(meta()) == fingerprint_hash({**meta(), "device": {**meta()["device"], "cpu_id": None}})
    assert fingerprint_hash(meta(cpu_id=zen5)) != fingerprint_hash(meta(cpu_id=older))


def test_load_profile_and_list(tmp_path):
    write_profile(tmp_path / "a", [op_row(batch=1), op_row(batch=8)])
    (tmp_path / "not-a-profile").mkdir()
    p = load_profile(tmp_path / "a")
    assert list(p.ops.columns) == OPS_COLUMNS and len(p.ops) == 2 and p.e2e.empty
    listed = list_profiles(tmp_path)
    assert [d["name"] for d in listed] == ["a"]
    assert listed[0]["ops_rows"] == 2 and listed[0]["threads"] == 1
    assert listed[0]["this_cpu"] is None  # no cpu_id recorded: cannot tell
    assert listed[0]["allocator"] == "default"  # no allocator in its protocol: measured before the field


def test_shipped_listing_names_each_profile_allocator():
    listed = {d["name"]: d["allocator"] for d in list_profiles()}
    assert listed["amd-epyc-f26m2-2c_torch-2.13_t1"] == "no_mmap"  # re-measured under it (2026-12-05)
    assert listed["amd-epyc-f26m2-2c_ort-1.31_t1"] == "default"


def test_listing_says_which_profiles_are_this_cpu(tmp_path):
    from latency.device import cpu_id

    for name, cid in (("here", cpu_id()), ("other", "AuthenticAMD 23/49/0 avx2")):
        (tmp_path / name).mkdir()
        m = meta(cpu_id=cid)
        write_meta(tmp_path / name, m)
    listed = {d["name"]: d["this_cpu"] for d in list_profiles(tmp_path)}
    assert listed == {"here": True if cpu_id() else None, "other": False}  # None: a kernel that names no CPU


def test_shipped_profiles_load():
    for d in list_profiles():
        assert "error" not in d, d
        p = load_profile(d["path"])
        assert len(p.ops) > 0 and set(p.e2e["split"]) == {"calibration", "test"}


def test_names_and_fingerprint():
    assert cpu_slug("Intel(R) Xeon(R) Processor", 2) == "intel-xeon-2c"
    assert cpu_slug("AMD EPYC 7B12 64-Core Processor", 4) == "amd-epyc-7b12-4c"
    assert cpu_slug("AMD EPYC", 2, "AuthenticAMD 26/2/1 avx2") == "amd-epyc-f26m2-2c"  # masked: family, model
    assert cpu_slug("AMD EPYC 7B12", 2, "AuthenticAMD 23/49/0 avx2") == "amd-epyc-7b12-2c"  # a name says enough
    fp = fingerprint(threads=2)
    assert fp["threads"] == 2 and fp["torch"] and fp["onnxruntime"] and fp["cores"] >= 1
    assert profile_name(fp, "torch", "2.13.0+cpu", 1).endswith("_torch-2.13_t1")
    assert profile_name({"gpu": "NVIDIA H100 80GB HBM3"}, "ort", "1.31.1", 1, "cuda") == "nvidia-h100-80gb-hbm3_ort-1.31_cuda"


def test_a_profile_from_before_the_allocator_resumes_only_under_its_allocator():
    """A stored protocol without ``allocator`` was measured under glibc's defaults: ``hwnas profile --allocator
    default`` may add to it, today's default (``no_mmap``) is refused with the field named."""
    from latency.profile_cli import config_from_args
    from latency.stats import Protocol
    from nas.cli import build_parser

    old = {**meta(), "protocol": {k: v for k, v in Protocol().to_dict().items() if k != "allocator"}}
    args = build_parser().parse_args(["profile", "--out", "x", "--allocator", "default"])
    assert config_from_args(args).protocol.allocator == "default"
    check_compatible("p", old, {**meta(), "protocol": config_from_args(args).protocol.to_dict()})
    with pytest.raises(ProfileError, match=r"protocol\.allocator 'default' -> 'no_mmap'.*--force-new"):
        check_compatible("p", old, {**meta(), "protocol": Protocol().to_dict()})
