"""answer.png, the research question's picture: every interval it draws is one the report computed, a
claimed row is marked exactly where the report claims, a sequential design adds its looks, and every
source of a report (a run directory or volume copy, tx/NAME) writes it."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from stilts import answer, cli, figures, report
from tests.operator.simulated_world import REGIMES, replicate
from tests.operator.test_report import fake_run, grid

PNG = b"\x89PNG\r\n\x1a\n"
AVG = report.AVG


def fixed_inputs() -> report.Inputs:
    """Two comparisons, both with a large interaction on the first five of 15 languages and 4 seeds: every
    average is claimed, so the languages are tested, and some are claimed and some not."""
    return replicate(np.random.default_rng(3), 4, True, REGIMES["seed noise small"], ("mnli", "qqp"),
                     size=(3.0, 3.0), first_seed=1)


def sequential_inputs() -> report.Inputs:
    """A sequential design run as the executors run it (tests/operator/simulated_world.py), to its stop."""
    design = answer.Design(0.03, first=3, per_look=1, max_seeds=6)
    full = replicate(np.random.default_rng(0), design.max_seeds, True, REGIMES["seed noise small"],
                     ("mnli", "qqp"), size=(0.5, 0.0), first_seed=1)
    looks: list[dict] = []
    while not answer.stopped(looks):
        released = answer.released(design, looks)
        looks.append(answer.take(report.Inputs("sim", "simulation", [r for r in full.runs if r.seed <= released],
                                               design=design, looks=list(looks)), 0.0))
    return report.Inputs("sim", "simulation", [r for r in full.runs if r.seed <= looks[-1]["seeds"]],
                         design=design, looks=looks)


def _same(plotted: dict | None, ci: dict | None) -> None:
    assert plotted is not None and ci is not None
    assert (plotted["mean"], plotted["low"], plotted["high"]) == (ci["mean"], ci.get("low"), ci.get("high"))


def check_data(r: dict, data: dict) -> None:
    """Every plotted interval is the report's own, and claimed exactly where the report claims."""
    assert [c["key"] for c in data["comparisons"]] == sorted(r["interaction"])
    assert data["level"] == r["level"]
    for comp in data["comparisons"]:
        cells = r["interaction"][comp["key"]]["languages"]
        assert [row["language"] for row in comp["rows"]] == \
            [AVG] + [lang for lang in r["languages"] if lang != AVG and lang in cells]
        for row in comp["rows"]:
            cell = cells[row["language"]]
            _same(row["interaction"], cell["paired"] or cell["pooled"])
            assert row["interaction"]["claimed"] is bool((cell["paired"] or {}).get("claimed"))
            _same(row["moeGain"], r["gain"][f"{comp['moe']}/{comp['task']}"][row["language"]])
            _same(row["denseGain"], r["gain"][f"{comp['dense']}/{comp['task']}"][row["language"]])
    if not r.get("answer"):
        assert data["sequential"] is None
        return
    seq, a = data["sequential"], r["answer"]
    assert (seq["decision"], seq["look"], seq["seeds"]) == (a["decision"], a["look"], a["seeds"])
    assert seq["targetHalfWidth"] == a["design"]["targetHalfWidth"]
    for key, plotted in seq["comparisons"].items():
        taken = [look for look in a["looks"] if key in look["comparisons"]]
        assert [p["look"] for p in plotted] == [look["look"] for look in taken]
        for p, look in zip(plotted, taken):
            _same(p, look["comparisons"][key])
            assert p["halfWidth"] == look["comparisons"][key]["halfWidth"]
            assert p["decided"] is bool(look["comparisons"][key]["decided"])


def drawn(ax, label: str):
    found = [c for c in ax.containers if c.get_label() == label]
    assert len(found) == 1, label
    return found[0]


def check_drawn(fig, data: dict) -> None:
    """The Figure's artists draw the data: one forest panel per comparison, each row's intervals where
    the data puts them (points), filled exactly when claimed; with a design, one looks panel each."""
    comparisons, seq = data["comparisons"], data["sequential"]
    looks = bool(seq and seq["comparisons"])
    assert len(fig.axes) == len(comparisons) * (2 if looks else 1)
    for ax, comp in zip(fig.axes, comparisons):
        assert comp["key"] in ax.get_title()
        for row in comp["rows"]:
            for role in ("interaction", "moeGain", "denseGain"):
                c = drawn(ax, f"_{role}:{row['language']}")
                assert c.lines[0].get_xdata()[0] == pytest.approx(row[role]["mean"] * 100)
                if row[role]["low"] is None:  # the report gave no interval: a point alone
                    assert not c.lines[2]
                    continue
                segment = c.lines[2][0].get_segments()[0]
                assert (segment[0][0], segment[1][0]) == pytest.approx((row[role]["low"] * 100, row[role]["high"] * 100))
            filled = drawn(ax, f"_interaction:{row['language']}").lines[0].get_markerfacecolor() != "white"
            assert filled is row["interaction"]["claimed"]
    if looks:
        for ax, comp in zip(fig.axes[len(comparisons):], comparisons):
            for look in seq["comparisons"][comp["key"]]:
                c = drawn(ax, f"_look:{look['look']}")
                assert c.lines[0].get_xdata()[0] == look["seeds"]
                assert c.lines[0].get_ydata()[0] == pytest.approx(look["mean"] * 100)
                if look["low"] is None:
                    assert not c.lines[2]
                    continue
                segment = c.lines[2][0].get_segments()[0]
                assert (segment[0][1], segment[1][1]) == pytest.approx((look["low"] * 100, look["high"] * 100))


def test_the_answer_plots_the_reports_intervals_and_marks_its_claims(tmp_path):
    r = report.build(fixed_inputs())
    data = figures.answer_data(r)
    check_data(r, data)
    claimed = {(c["key"], row["language"]) for c in data["comparisons"] for row in c["rows"]
               if row["interaction"]["claimed"]}
    assert {k for k, lang in claimed if lang == AVG} == set(r["interaction"]), "every average is claimed"
    languages = {(c["key"], row["language"]) for c in data["comparisons"] for row in c["rows"]} - \
        {(k, AVG) for k in r["interaction"]}
    assert claimed & languages and languages - claimed, "some languages claimed, some not"
    assert claimed == {(k, lang) for k, lang, _ in report.claims(r)}
    fig = figures.answer_figure(data)
    check_drawn(fig, data)
    path = tmp_path / "answer.png"
    assert figures.answer_png(r, path) == data
    assert path.read_bytes()[:8] == PNG


def test_a_sequential_design_shows_each_look_narrowing_and_why_it_stopped(tmp_path):
    inputs = sequential_inputs()
    text = report.write(inputs, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    r = report.build(inputs)
    assert r["answer"]["looks"] and "Stopped after look" in text
    data = figures.answer_data(r)
    check_data(r, data)
    assert saved["answerFigure"] == json.loads(json.dumps(data)), "report.json keeps what answer.png plots"
    seq = data["sequential"]
    assert seq["stopped"] and seq["reason"] in text and len(seq["comparisons"]) == 2
    fig = figures.answer_figure(data)
    check_drawn(fig, data)
    assert any(seq["reason"] in sub._suptitle.get_text() for sub in fig.subfigs)
    assert (tmp_path / "answer.png").read_bytes()[:8] == PNG
    assert report.outputs(tmp_path) == [tmp_path / name for name in
                                        ("report.txt", "report.json", "heatmap.png", "answer.png")]


def test_a_design_before_its_first_look_plots_no_looks():
    design = answer.Design(0.03, first=4, per_look=1, max_seeds=6)
    runs = replicate(np.random.default_rng(0), 3, True, REGIMES["seed noise small"], first_seed=1).runs
    r = report.build(report.Inputs("x", "x", runs, design=design))
    data = figures.answer_data(r)
    check_data(r, data)
    assert data["sequential"]["comparisons"] == {} and not data["sequential"]["stopped"]
    assert len(figures.answer_figure(data).axes) == 1


def test_a_comparison_without_shared_seeds_plots_its_pooled_contrast_unclaimed(tmp_path):
    """MoE ran seeds 1-2, dense 3-4: the report has only the pooled two-way contrast, which claims nothing."""
    acc = {k: v for k, v in grid(seeds=((1, 0.0), (2, 0.01), (3, -0.01), (4, 0.0))).items()
           if (k[0] == "moe") == (k[3] <= 2)}
    r = report.build(report.from_directory(fake_run(tmp_path, acc)))
    data = figures.answer_data(r)
    check_data(r, data)
    rows = data["comparisons"][0]["rows"]
    assert {row["interaction"]["kind"] for row in rows} == {"pooled"}
    assert not any(row["interaction"]["claimed"] for row in rows)
    assert rows[0]["moeGain"]["low"] is None, "two tied seeds: the report gives MoE's gain no interval"
    check_drawn(figures.answer_figure(data), data)


def test_every_source_writes_answer_png_and_none_without_a_comparison(tmp_path, capsys, monkeypatch):
    # a run directory, or a copy of the volume: `stilts report DIR`
    run_dir = fake_run(tmp_path / "volume", grid(), plan_json=False)
    assert cli.main(["report", str(run_dir)]) == 0
    assert f"{run_dir / 'answer.png'}" in capsys.readouterr().out
    assert (run_dir / "answer.png").read_bytes()[:8] == PNG
    assert json.loads((run_dir / "report.json").read_text())["answerFigure"]["comparisons"][0]["key"] == \
        "moe-vs-dense/mnli"
    # a live experiment: `stilts report tx/NAME`, with the cluster's results (as test_report reads them)
    from stilts.plan import plan
    from stilts.spec import parse_spec
    spec = parse_spec({"dataSource": "synthetic", "seeds": [1, 2], "intermediateTasks": ["qqp"],
                       "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
                                     {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe",
                                      "gpusPerWorker": 0, "moe": {"experts": 4, "expertParallelSize": 1}}]})
    jobs = plan(spec)
    results = {j.hash: {"test": {"en": 0.8 + 0.01 * (j.backbone == "moe"), "de": 0.6 + 0.01 * j.seed},
                        "testItems": 1000} for j in jobs if j.phase == "evaluate"}
    seen = SimpleNamespace(name="exp", jobs=jobs, results=results)
    monkeypatch.setattr(cli, "_cluster", lambda args: (SimpleNamespace(load=lambda *a: seen), None, "default"))
    out = tmp_path / "cluster"
    assert cli.main(["report", "tx/exp", "--out", str(out)]) == 0
    assert f"{out / 'answer.png'}" in capsys.readouterr().out
    assert (out / "answer.png").read_bytes()[:8] == PNG
    # one backbone: no comparison, no answer.png (an old one is removed), and the CLI does not list it
    dense = fake_run(tmp_path / "dense", {k: v for k, v in grid().items() if k[0] == "dense"})
    (dense / "answer.png").write_bytes(PNG)
    assert cli.main(["report", str(dense)]) == 0
    printed = capsys.readouterr().out
    assert "answer.png" not in printed and "heatmap.png" in printed
    assert not (dense / "answer.png").exists() and (dense / "heatmap.png").is_file()
    assert json.loads((dense / "report.json").read_text())["answerFigure"] is None
