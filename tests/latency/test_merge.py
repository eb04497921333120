"""``hwnas merge-profiles``: one profile from several sittings of one machine (latency/merge.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from latency.merge import merge_profiles
from latency.profile_data import read_profile
from latency.profiler import open_folder
from latency.table import ProfileError, load_profile


def scaled(profile_maker, folder: Path, scale: float, **kw) -> Path:
    return profile_maker(folder, seed=0, scale=scale, **kw)  # same architectures and noise: only the speed differs


def test_sittings_are_brought_to_the_first_ones_speed_and_an_outlier_loses_the_median(tmp_path, profile_maker):
    a = scaled(profile_maker, tmp_path / "a", 1.0)
    b = scaled(profile_maker, tmp_path / "b", 1.2)  # an hour the machine ran 20 % slower
    c = scaled(profile_maker, tmp_path / "c", 0.9)
    e2e = pd.read_csv(c / "e2e.csv")
    e2e.loc[0, "latency_p50_ms"] *= 1.5  # one whole model in a slow process state in sitting c
    e2e.to_csv(c / "e2e.csv", index=False)
    res = merge_profiles([a, b, c], tmp_path / "m")
    assert [s["e2e_factor"] for s in res["sittings"]] == [1.0, pytest.approx(1.2, rel=1e-6), pytest.approx(0.9, rel=1e-6)]
    assert [s["ops_factor"] for s in res["sittings"]] == [1.0, pytest.approx(1.2, rel=1e-6), pytest.approx(0.9, rel=1e-6)]
    merged, first = load_profile(tmp_path / "m"), load_profile(a)
    assert merged.e2e["latency_p50_ms"].tolist() == pytest.approx(first.e2e["latency_p50_ms"].tolist(), rel=1e-9)
    assert merged.ops["latency_p50_ms"].tolist() == pytest.approx(first.ops["latency_p50_ms"].tolist(), rel=1e-9)
    assert (merged.e2e["n_runs"] == 3 * first.e2e["n_runs"]).all()  # every sitting's runs count
    meta = json.loads((tmp_path / "m" / "profile.json").read_text())
    assert [m["name"] for m in meta["merged_from"]] == ["a", "b", "c"] and meta["status"] == "complete"
    assert not (tmp_path / "m" / "visits.csv").exists()  # per-visit timings are one sitting's own
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")]  # no scratch folder left


def test_two_sittings_give_their_geometric_mean_and_rows_of_one_sitting_are_kept(tmp_path, profile_maker):
    a = scaled(profile_maker, tmp_path / "a", 1.0)
    b = scaled(profile_maker, tmp_path / "b", 1.0)
    e2e = pd.read_csv(b / "e2e.csv")
    e2e.loc[1:, "latency_p50_ms"] *= 1.1  # b 10 % slower on every row but row 0 (the factor follows the majority)
    extra = e2e.iloc[[0]].assign(batch=2)  # a row only b measured
    pd.concat([e2e, extra]).to_csv(b / "e2e.csv", index=False)
    merge_profiles([a, b], tmp_path / "m")
    merged, first = load_profile(tmp_path / "m").e2e, load_profile(a).e2e
    assert len(merged) == len(first) + 1 and merged.iloc[-1]["batch"] == 2
    assert merged.iloc[-1]["split"] == first.iloc[0]["split"]  # a row's split comes from the sitting that has it
    # row 0: a read x, b read x (1 / 1.1 after the factor): the geometric mean
    assert merged.iloc[0]["latency_p50_ms"] == pytest.approx(first.iloc[0]["latency_p50_ms"] / 1.1 ** 0.5, rel=1e-6)
    assert merged.iloc[1]["latency_p50_ms"] == pytest.approx(first.iloc[1]["latency_p50_ms"], rel=1e-9)


def test_a_merged_profile_fits_and_is_not_resumed(tmp_path, profile_maker):
    from latency.predictor import fit

    a, b = scaled(profile_maker, tmp_path / "a", 1.0), scaled(profile_maker, tmp_path / "b", 1.1)
    merge_profiles([a, b], tmp_path / "m")
    pred = fit(read_profile(tmp_path / "m"), "lut+calibration")
    assert pred.meta["profile_name"] == "m"
    meta = json.loads((tmp_path / "m" / "profile.json").read_text())
    with pytest.raises(ProfileError, match="merges 2 profiles .* not resumed or extended"):
        open_folder(tmp_path / "m", meta, force_new=False)
    folder, stored = open_folder(tmp_path / "m", meta, force_new=True)  # --force-new writes beside it
    assert folder.name == "m-2" and stored is None


@pytest.mark.parametrize("case, says", [
    ("one", "at least two profiles"),
    ("twice", "the same profile is given twice"),
    ("other_device", "another setup"),
    ("out_exists", "exists and is not empty"),
    ("transfer", "is a transfer profile"),
    ("running", "is running"),
    ("no_shared", "shares no e2e entry"),
    ("merged_input", "is itself a merge of 2 profiles"),
    ("out_is_file", "exists and is not empty"),
])
def test_bad_input_is_refused_and_writes_nothing(tmp_path, profile_maker, case, says):
    a = scaled(profile_maker, tmp_path / "a", 1.0)
    b = scaled(profile_maker, tmp_path / "b", 1.1, device="another-cpu" if case == "other_device" else "synthetic-cpu")
    out = tmp_path / "m"
    paths = {"one": [a], "twice": [a, a]}.get(case, [a, b])
    if case == "out_exists":
        out.mkdir()
        (out / "note.txt").write_text("keep me")
    if case in ("transfer", "running"):
        meta = json.loads((b / "profile.json").read_text())
        meta.update({"transfer_from": {"name": "src"}} if case == "transfer" else {"status": "running"})
        (b / "profile.json").write_text(json.dumps(meta))
    if case == "merged_input":
        merge_profiles([a, b], tmp_path / "ab")
        paths = [tmp_path / "ab", a]
    if case == "out_is_file":
        out.write_text("keep me")
    if case == "no_shared":
        e2e = pd.read_csv(b / "e2e.csv")
        e2e.assign(batch=e2e["batch"] + 100).to_csv(b / "e2e.csv", index=False)
    with pytest.raises(ProfileError, match=says):
        merge_profiles(paths, out)
    if case == "out_exists":
        assert (out / "note.txt").read_text() == "keep me"
    elif case == "out_is_file":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")]


def test_the_command_merges_and_says_what_went_wrong_in_one_line(tmp_path, profile_maker):
    a, b = scaled(profile_maker, tmp_path / "a", 1.0), scaled(profile_maker, tmp_path / "b", 1.25)
    ok = subprocess.run([sys.executable, "-m", "nas.cli", "merge-profiles", str(a), str(b), "--out",
                         str(tmp_path / "m"), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    res = json.loads(ok.stdout)
    assert res["sittings"][1]["e2e_factor"] == pytest.approx(1.25, rel=1e-6) and res["e2e_in_every_sitting"] > 0
    bad = subprocess.run([sys.executable, "-m", "nas.cli", "merge-profiles", str(a), str(b), "--out",
                          str(tmp_path / "m")], capture_output=True, text=True)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "exists" in bad.stderr
