import json

import pytest

from stilts import report


def fake_run(tmp_path, accuracies):
    """accuracies: {(backbone, arch, task, seed): {lang: acc}} -> a run directory like the executor's."""
    rows = []
    for i, ((backbone, arch, task, seed), langs) in enumerate(accuracies.items()):
        d = tmp_path / f"job{i}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(
            {"languages": {lang: {"dev": acc, "test": acc} for lang, acc in langs.items()}}))
        (d / "job.json").write_text(json.dumps({"backbone": {"name": backbone, "architecture": arch}}))
        rows.append({"hash": f"h{i}", "phase": "evaluate", "directory": str(d),
                     "labels": {"backbone": backbone, "intermediateTask": task, "seed": str(seed)}})
    (tmp_path / "plan.json").write_text(json.dumps({"jobs": rows}))
    return tmp_path


def test_mean_interval_matches_a_t_interval():
    ci = report.mean_interval([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0
    assert ci["high"] - ci["mean"] == pytest.approx(4.303 * 1.0 / 3 ** 0.5)
    assert report.mean_interval([0.5])["low"] is None


def test_gain_and_interaction_paired_by_seed(tmp_path):
    acc = {}
    for seed, noise in ((1, 0.00), (2, 0.01), (3, -0.01)):
        acc[("dense", "dense", "none", seed)] = {"en": 0.80 + noise, "de": 0.70 + noise}
        acc[("dense", "dense", "mnli", seed)] = {"en": 0.82 + noise, "de": 0.72 + noise}   # +2 points
        acc[("moe", "moe", "none", seed)] = {"en": 0.81 + noise, "de": 0.71 + noise}
        acc[("moe", "moe", "mnli", seed)] = {"en": 0.81 + noise, "de": 0.71 + noise}       # +0 points
    r = report.build(fake_run(tmp_path, acc))
    assert r["gain"]["dense/mnli"]["en"]["mean"] == pytest.approx(0.02)
    inter = r["interaction"]["moe-vs-dense/mnli"]["avg"]
    assert inter["mean"] == pytest.approx(-0.02)
    # Seed noise is shared by both arms of each pair, so the paired interval is tight and excludes 0.
    assert report.excludes_zero(inter)
    text = report.write(tmp_path)
    assert "interval excludes 0" in text and (tmp_path / "heatmap.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report.json").read_text())["interaction"]


def test_no_difference_is_reported_as_such(tmp_path):
    acc = {}
    for seed, g in ((1, 0.01), (2, -0.01), (3, 0.02)):
        acc[("dense", "dense", "none", seed)] = {"en": 0.8}
        acc[("dense", "dense", "qqp", seed)] = {"en": 0.8 + g}
        acc[("moe", "moe", "none", seed)] = {"en": 0.8}
        acc[("moe", "moe", "qqp", seed)] = {"en": 0.8 - g}
    text = report.write(fake_run(tmp_path, acc))
    assert "interval includes 0" in text
