"""The report from a run directory (local, or a volume copy without plan.json) and from a cluster's
stored results; the research question's comparisons."""

import json
from types import SimpleNamespace

import pytest

from stilts import report


def fake_run(tmp_path, accuracies, plan_json=True, pretraining=None, predicted=None):
    """accuracies: {(backbone, arch, task, seed): {lang: acc}} -> job directories like a run's."""
    rows = []
    for i, ((backbone, arch, task, seed), langs) in enumerate(accuracies.items()):
        tmp_path.mkdir(parents=True, exist_ok=True)
        d = tmp_path / f"{i:016x}"
        d.mkdir()
        n = 1000
        results = {"languages": {lang: {"dev": acc, "test": acc} for lang, acc in langs.items()},
                   "correct": {lang: "1" * round(acc * n) + "0" * (n - round(acc * n)) for lang, acc in langs.items()},
                   "predicted": (predicted or {}).get(backbone, {lang: [0.34, 0.33, 0.33] for lang in langs})}
        (d / "results.json").write_text(json.dumps(results))
        (d / "COMPLETE").write_text("{}")
        labels = {"backbone": backbone, "intermediateTask": task, "seed": str(seed), "phase": "evaluate",
                  "pretraining": (pretraining or {}).get(backbone, "")}
        (d / "job.json").write_text(json.dumps({"phase": "evaluate", "labels": labels, "backbone": {
            "name": backbone, "architecture": arch, "model": "xlmr"}}))
        rows.append({"hash": d.name, "name": f"{backbone}-{task}-s{seed}-evaluate", "phase": "evaluate",
                     "directory": str(d), "labels": labels})
    if plan_json:
        (tmp_path / "plan.json").write_text(json.dumps({"jobs": rows}))
    return tmp_path


def grid(dense_gain=0.02, moe_gain=0.0, seeds=((1, 0.0), (2, 0.01), (3, -0.01))):
    acc = {}
    for seed, noise in seeds:
        acc[("dense", "dense", "none", seed)] = {"en": 0.80 + noise, "de": 0.70 + noise}
        acc[("dense", "dense", "mnli", seed)] = {"en": 0.80 + dense_gain + noise, "de": 0.70 + dense_gain + noise}
        acc[("moe", "moe", "none", seed)] = {"en": 0.81 + noise, "de": 0.71 + noise}
        acc[("moe", "moe", "mnli", seed)] = {"en": 0.81 + moe_gain + noise, "de": 0.71 + moe_gain + noise}
    return acc


def test_gain_and_interaction_paired_by_seed(tmp_path):
    r = report.build(report.from_directory(fake_run(tmp_path, grid())))
    assert r["gain"]["dense/mnli"]["en"]["mean"] == pytest.approx(0.02)
    inter = r["interaction"]["moe-vs-dense/mnli"]
    paired = inter["languages"]["avg"]["paired"]
    assert paired["mean"] == pytest.approx(-0.02)
    # Seed noise is shared by both arms of each pair: the paired interval is tight and excludes 0, while the
    # pooled two-way contrast, which ignores the pairing, is wider.
    assert report.excludes_zero(paired)
    pooled = inter["languages"]["avg"]["pooled"]
    assert pooled["high"] - pooled["low"] > paired["high"] - paired["low"]
    assert inter["comparison"].startswith("like with like")
    text = report.write(report.from_directory(tmp_path), tmp_path)
    assert "the gain differs between MoE and dense" in text and (tmp_path / "heatmap.png").stat().st_size > 1000
    assert "pooled two-way" not in text and "after Holm's adjustment" in text  # every seed is paired
    assert json.loads((tmp_path / "report.json").read_text())["interaction"]


def test_no_difference_is_reported_as_such(tmp_path):
    acc = {}
    for seed, g in ((1, 0.01), (2, -0.01), (3, 0.02)):
        acc[("dense", "dense", "none", seed)] = {"en": 0.8}
        acc[("dense", "dense", "qqp", seed)] = {"en": 0.8 + g}
        acc[("moe", "moe", "none", seed)] = {"en": 0.8}
        acc[("moe", "moe", "qqp", seed)] = {"en": 0.8 - g}
    text = report.write(report.from_directory(fake_run(tmp_path, acc)), tmp_path)
    assert "interval includes 0" in text


def test_accuracy_intervals_respect_0_and_100(tmp_path):
    acc = {("dense", "dense", "none", s): {"en": v} for s, v in ((1, 0.995), (2, 1.0))}
    r = report.build(report.from_directory(fake_run(tmp_path, acc)))
    ci = r["accuracy"]["dense/none"]["en"]
    # Two seeds: a t interval with one df is wide, and is clipped at 100%.
    assert 0.9 < ci["low"] <= ci["mean"] <= ci["high"] == 1.0


def test_a_volume_copy_reports_without_plan_json_and_names_what_is_missing(tmp_path):
    from stilts.plan import plan
    from stilts.spec import parse_spec
    fake_run(tmp_path, grid(), plan_json=False)
    inputs = report.from_directory(tmp_path)
    assert len(inputs.runs) == 12 and inputs.missing == []
    spec = parse_spec({"dataSource": "synthetic", "seeds": [1], "intermediateTasks": ["qqp"],
                       "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}]})
    planned = plan(spec)
    partial = report.from_directory(tmp_path, planned)
    assert set(partial.missing) == {j.name for j in planned if j.phase == "evaluate"}
    assert "Partial report" in report.to_text(report.build(partial))


def test_constant_predictors_are_flagged_and_the_target_data_noted(tmp_path):
    acc = {("dense", "dense", "none", 1): {"en": 0.9, "sw": 0.34}, ("dense", "dense", "anli", 1): {"en": 0.9, "sw": 0.34}}
    predicted = {"dense": {"en": [0.3, 0.4, 0.3], "sw": [0.0, 0.99, 0.01]}}
    r = report.build(report.from_directory(fake_run(tmp_path, acc, predicted=predicted)))
    assert {(f["language"], f["label"]) for f in r["constantPredictors"]} == {("sw", "neutral")}
    assert "MNLI" in r["targetDataNotes"]["anli"]
    text = report.to_text(r)
    assert "sw (neutral 99%)" in text and "anli's gain is partly more training on the target's data" in text


def test_moe_with_continued_pretraining_is_compared_with_the_dense_control(tmp_path):
    acc = grid()
    for (b, a, t, s), v in list(acc.items()):
        if b == "dense":
            acc[("dense-cp1000", a, t, s)] = v
    runs = fake_run(tmp_path, acc, pretraining={"moe": "continued masked-LM, 1000 steps",
                                                 "dense-cp1000": "continued masked-LM, 1000 steps"})
    r = report.build(report.from_directory(runs))
    assert list(r["interaction"]) == ["moe-vs-dense-cp1000/mnli"]
    assert "1000 steps" in r["interaction"]["moe-vs-dense-cp1000/mnli"]["comparison"]


def test_the_cluster_source_reads_the_operators_results():
    from stilts.plan import plan
    from stilts.spec import parse_spec
    spec = parse_spec({"dataSource": "synthetic", "seeds": [1, 2], "intermediateTasks": ["qqp"],
                       "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
                                     {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe",
                                      "gpusPerWorker": 0, "moe": {"experts": 4, "expertParallelSize": 1}}]})
    jobs = plan(spec)
    results = {j.hash: {"test": {"en": 0.8, "de": 0.6 + 0.01 * j.seed}, "testItems": 1000}
               for j in jobs if j.phase == "evaluate" and not (j.backbone == "moe" and j.seed == 2)}
    seen = SimpleNamespace(name="exp", jobs=jobs, results=results)
    inputs = report.from_cluster(seen)
    r = report.build(inputs)
    assert len(inputs.runs) == 6 and len(inputs.missing) == 2
    assert r["accuracy"]["dense/qqp"]["de"]["mean"] == pytest.approx(0.615)
    assert "moe-vs-dense/qqp" in r["interaction"]
    # MoE's seed 2 is missing: pairing keeps one seed, the pooled contrast uses all six runs and is shown.
    assert "pooled two-way over all 6 runs" in report.to_text(r)


def test_the_mlm_ablation_is_its_own_arm_in_the_report(tmp_path):
    """<task>-mlm runs get their own rows, a gain over the baseline, an interaction of their own, and the
    ablation's contrast with plain STILTs on the same task, paired by seed (hand-computed: -1.5 points)."""
    acc = grid()
    for seed, noise in ((1, 0.0), (2, 0.01), (3, -0.01)):
        for backbone, base in (("dense", 0.80), ("moe", 0.81)):
            plain = acc[(backbone, backbone, "mnli", seed)]
            acc[(backbone, backbone, "mnli-mlm", seed)] = {lang: v - 0.015 for lang, v in plain.items()}
    r = report.build(report.from_directory(fake_run(tmp_path, acc)))
    assert "dense/mnli-mlm" in r["accuracy"] and "dense/mnli-mlm" in r["gain"]
    assert r["gain"]["dense/mnli-mlm"]["avg"]["mean"] == pytest.approx(0.02 - 0.015)
    assert r["mlmAblation"]["dense/mnli-mlm"]["avg"]["mean"] == pytest.approx(-0.015)
    assert r["mlmAblation"]["moe/mnli-mlm"]["en"]["mean"] == pytest.approx(-0.015)
    assert "moe-vs-dense/mnli-mlm" in r["interaction"]
    assert "mnli-mlm" in r["targetDataNotes"]  # the plain task's overlap with the target's data carries over
    text = report.to_text(r)
    assert "Ablation (Phang et al. 2020)" in text and "dense/mnli-mlm" in text


def test_one_holm_family_covers_every_claim_and_languages_wait_for_three_seeds(tmp_path):
    """The families are what the text claims: each comparison's average for every task, then each language
    once there are 3 seeds, tested only when every average differs; with 2 seeds no language is claimed."""
    acc = grid()
    for (b, a, t, s), v in list(acc.items()):
        if t == "mnli":
            acc[(b, a, "qqp", s)] = v
    three = report.build(report.from_directory(fake_run(tmp_path / "three", acc)))
    assert (three["claims"]["averages"], three["claims"]["languages"]) == (2, 2 * 2)  # 2 tasks; en, de each
    assert three["claims"]["languagesTested"]  # every average differs (grid(): dense gains 2 points, MoE 0)
    two_seeds = {k: v for k, v in acc.items() if k[3] != 3}
    two = report.build(report.from_directory(fake_run(tmp_path / "two", two_seeds)))
    assert (two["claims"]["averages"], two["claims"]["languages"]) == (2, 0)
    assert all("claimed" not in r["paired"] for result in two["interaction"].values()
               for lang, r in result["languages"].items() if lang != report.AVG)
    assert "per language: no claims with 2 seed(s)" in report.to_text(two)


def test_a_comparison_without_shared_seeds_keeps_its_pooled_contrast_in_the_text(tmp_path):
    """MoE ran seeds 1-2, dense 3-4: nothing pairs, and the pooled two-way contrast (every run counts) is
    what docs/statistics.md says covers it; the comparison must not disappear from the text."""
    acc = {k: v for k, v in grid(seeds=((1, 0.0), (2, 0.01), (3, -0.01), (4, 0.0))).items()
           if (k[0] == "moe") == (k[3] <= 2)}
    r = report.build(report.from_directory(fake_run(tmp_path, acc)))
    avg = r["interaction"]["moe-vs-dense/mnli"]["languages"]["avg"]
    assert avg["paired"] is None and avg["pooled"]["n"] == 8
    text = report.to_text(r)
    assert "moe-vs-dense/mnli: no seed ran in all four arms" in text and "pooled two-way over all 8 runs" in text
    assert report.claims(r) == []


def test_tied_seeds_without_item_counts_are_not_called_one_seed():
    """A cluster report of runs from a trainer that sent no item counts, whose two seeds tie: no noise can
    be estimated, and the text says so rather than "one seed"."""
    runs = []
    for backbone in ("dense", "moe"):
        for task in ("none", "mnli"):
            for seed in (1, 2):
                runs.append(report.Run(backbone=backbone, architecture=backbone, task=task, seed=seed, model="m",
                                       accuracy={"en": {"test": 0.8 if task == "none" else 0.82}}))
    r = report.build(report.Inputs("x", "tx/x", runs))
    text = report.to_text(r)
    assert "one seed" not in text and "no test-set noise known: no interval" in text
