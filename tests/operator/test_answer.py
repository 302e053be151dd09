"""The sequential design as pure functions: its boundaries, its claims, its looks in the scheduler, and a
local run of it (the stand-in world trainer). Its error rates are proven by simulation in
test_stats_simulation.py."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as distributions

from stilts import answer, boundaries, local, report
from stilts.plan import job_json, plan
from stilts.reconcile import Observed, Policy, reconcile
from stilts.spec import parse_experiment, parse_spec
from tests.operator import world_trainer

SPEC = {"dataSource": "synthetic", "intermediateTasks": ["anli", "qqp"], "target": {"languages": ["de", "en", "sw"]},
        "maxConcurrentJobs": 8, "retries": {"limit": 1, "backoffSeconds": 0},
        "answer": {"targetHalfWidth": 3, "firstSeeds": 3, "seedsPerLook": 1, "maxSeeds": 8},
        "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
                      {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe", "gpusPerWorker": 0,
                       "moe": {"experts": 4, "expertParallelSize": 1}}]}


def test_one_final_look_is_the_fixed_design_and_spending_follows_hwang_shih_decani():
    assert boundaries.schedule((5,), 5, 0.05, final=True) == (0.05,)
    assert boundaries.spent(1.0, 0.05) == pytest.approx(0.05) and boundaries.spent(0.0, 0.05) == 0
    # gamma 1: f(t) = alpha (1 - e^-t) / (1 - e^-1)
    assert boundaries.spent(0.5, 0.05) == pytest.approx(0.05 * (1 - math.exp(-0.5)) / (1 - math.exp(-1)))


def test_t_boundaries_spend_what_they_promise_on_fresh_seeds():
    """The boundaries come from one random stream; on another, sequences of normal seeds with no effect
    cross some look's boundary alpha of the time in all, and f(t_1) of the time at the first look. The
    normal theory's levels, which assume sqrt(n_j/n_k) correlation, cross more often with few seeds."""
    sizes, planned = (3, 4, 5, 6, 8), 8
    levels = boundaries.schedule(sizes, planned, 0.05, final=True)
    rng = np.random.default_rng(99)
    x = rng.standard_normal((100_000, planned))
    crossed = np.zeros(len(x), bool)
    first = None
    for n, level in zip(sizes, levels):
        t = np.abs(x[:, :n].mean(1)) / (x[:, :n].std(1, ddof=1) / math.sqrt(n))
        now = t > distributions.t.isf(level / 2, n - 1)
        first = now.mean() if first is None else first
        crossed |= now
    se = math.sqrt(0.05 * 0.95 / len(x))
    assert abs(crossed.mean() - 0.05) < 3 * se, crossed.mean()
    assert first == pytest.approx(boundaries.spent(3 / 8, 0.05), rel=0.06)


def test_sequential_holm_is_holm_with_one_look_and_passes_alpha_on_with_several():
    one = answer.sequential_holm({"a": [0.01], "b": [0.04], "c": [0.03]}, lambda a: (a,))
    assert set(one) == {"a"}, "Holm: 0.01 <= 0.05/3; then 0.03 > 0.05/2"
    two = answer.sequential_holm({"a": [0.01], "b": [0.02], "c": [0.3]}, lambda a: (a,))
    assert set(two) == {"a", "b"} and two["b"] == (0, 0.025)
    # Several looks: "b" crosses at look 1 only once "a"'s share has passed to it.
    levels = lambda a: (a / 4, a)  # noqa: E731
    found = answer.sequential_holm({"a": [0.001, 0.5], "b": [0.01, 0.5]}, levels)
    assert found == {"a": (0, 0.025 / 4), "b": (0, 0.05 / 4)}


def test_released_seeds_and_when_a_look_is_due():
    design = answer.Design(0.03, first=3, per_look=2, max_seeds=8)
    assert design.sizes(4) == (3, 5, 7, 8) and design.most_looks == 4
    assert answer.released(design, []) == 3
    looks = [{"seeds": 3, "decision": "continue"}]
    assert answer.released(design, looks) == 5 and answer.due(design, looks, True, 5)
    assert not answer.due(design, looks, False, 5), "not before every evaluate job has ended"
    assert not answer.due(design, looks, True, 3), "not on a plan made before the last look"
    assert not answer.due(design, [{"seeds": 3, "decision": "decided"}], True, 3), "not after it stopped"
    assert answer.due(design, [], True, 3) and not answer.due(None, [], True, 3)
    assert answer.decide(design, (3,), {"x": {"decided": True, "halfWidth": 0.1}}) == "decided"
    assert answer.decide(design, (3,), {"x": {"decided": False, "halfWidth": 0.02}}) == "precise enough"
    assert answer.decide(design, (3, 5, 7, 8), {"x": {"decided": False, "halfWidth": 0.1}}) == "budget reached"
    assert answer.decide(design, (3,), {"x": {"decided": False, "halfWidth": 0.1}}) == "continue"
    assert answer.decide(design, (3,), {}) == "nothing to compare", "no comparison left (baselines failed): stop"
    assert answer.decide(design, (3,), {"x": {"decided": False, "halfWidth": None}}) == "continue"


def _succeeded(jobs, records, name):
    by_hash = {j.hash: j for j in jobs}
    out = {}
    for h, r in records.items():
        if r["state"] in ("Starting", "Running"):
            summary, _ = world_trainer.outcome(job_json(by_hash[h], "out", None, experiment="e"))
            out[name(h, r["attempts"])] = Observed("Succeeded", summary=json.dumps(summary))
    return out


def test_the_scheduler_looks_once_per_wave_and_a_replayed_pass_neither_skips_nor_repeats_it():
    """reconcile with a look: due when every evaluate job of the released seeds has ended; the look is in
    the decision, with the records it saw (one write). Replaying a pass from the written state (an
    operator restarted after the write) takes no second look; replaying from the state before it (a
    restart before the write) takes the same look again."""
    spec = parse_spec(SPEC)
    design = answer.Design.of(spec)
    name = lambda h, a: f"{h}-{a}"  # noqa: E731
    calls = []

    def look(records, results):
        calls.append(len(records))
        return {"look": len(looks) + 1, "seeds": answer.released(design, looks), "decision": "continue",
                "comparisons": {}}
    looks: list[dict] = []
    jobs, records, now = plan(spec, looks), {}, 0.0
    for _ in range(40):
        d = reconcile(jobs, records, _succeeded(jobs, records, name), now, Policy.of(spec), name, looks=looks, look=look)
        if d.looks != looks:
            before = (records, looks)
            again = reconcile(jobs, records, _succeeded(jobs, records, name), now, Policy.of(spec), name,
                              looks=looks, look=look)
            assert again.looks == d.looks, "the same look from the same state"
            records, looks = d.records, d.looks
            after = reconcile(jobs, records, {}, now, Policy.of(spec), name, looks=looks, look=look)
            assert after.looks == looks, "no second look from the written state, on the old plan"
            after = reconcile(plan(spec, looks), records, {}, now, Policy.of(spec), name, looks=looks, look=look)
            assert after.looks == looks and after.create, "nor on the new one: it creates the next wave"
            del before
            break
        records, now = d.records, now + 1
    assert len(looks) == 1 and looks[0]["seeds"] == 3 and d.requeue_after == 0
    grown = plan(spec, looks)
    assert {j.seed for j in grown if j.seed} == {1, 2, 3, 4}
    assert {j.hash for j in jobs} <= {j.hash for j in grown}, "a look keeps every job's hash"


def test_a_local_sequential_run_stops_when_answered_reruns_nothing_and_replays_an_edited_design(tmp_path):
    doc = {"apiVersion": "stilts.dev/v1alpha1", "kind": "TransferExperiment", "metadata": {"name": "seq"},
           "spec": SPEC}

    def run(spec):
        ex = local.LocalExecutor(parse_experiment({**doc, "spec": spec}), root=tmp_path / "runs", echo=False)
        ex.trainer = [sys.executable, str(Path(world_trainer.__file__))]
        assert ex.run(poll_seconds=0.01)
        return ex
    ex = run(SPEC)
    looks = ex.looks
    assert [look["look"] for look in looks] == list(range(1, len(looks) + 1)) and len(looks) >= 2
    assert looks[0]["decision"] == "continue" and looks[-1]["decision"] in answer.STOP_REASONS
    ran = {j.hash for j in ex.jobs}
    assert {j.seed for j in ex.jobs if j.seed} == set(range(1, looks[-1]["seeds"] + 1))
    saved = json.loads((ex.dir / report.ANSWER_FILE).read_text())
    assert saved["looks"] == looks
    built = report.build(report.from_directory(ex.dir))
    assert built["answer"]["decision"] == looks[-1]["decision"] and built["answer"]["look"] == len(looks)
    for key, c in built["answer"]["comparisons"].items():
        assert (c["low"], c["high"]) == pytest.approx((looks[-1]["comparisons"][key]["low"],
                                                      looks[-1]["comparisons"][key]["high"]))
    text = report.to_text(built)
    assert "The answer (sequential design" in text and "Cost of the answer" in text
    # A copy of the volume has no answer.json (the operator keeps the looks in its ConfigMap): with the
    # spec, the report takes the same looks again from the runs.
    import shutil
    copy = tmp_path / "volume-copy"
    shutil.copytree(ex.dir, copy, ignore=shutil.ignore_patterns(report.ANSWER_FILE, "plan.json"))
    replayed = report.build(report.from_directory(copy, plan(parse_spec(SPEC)), answer.Design.of(parse_spec(SPEC))))
    assert [(h["seeds"], h["decision"]) for h in replayed["answer"]["looks"]] == \
        [(look["seeds"], look["decision"]) for look in looks]
    spent = built["answer"]["cost"]["spent"]
    again = run(SPEC)
    assert again.looks == looks, "a rerun takes no new look"
    assert all(r.get("attempts", 0) == 0 for r in again.records.values()), "and runs nothing"
    # and the answer still costs what its jobs cost, though this run adopted every one of them
    assert report.build(report.from_directory(again.dir))["answer"]["cost"]["spent"] == pytest.approx(spent)
    wider = json.loads(json.dumps(SPEC))
    wider["answer"]["targetHalfWidth"] = 50
    edited = run(wider)
    assert [look["decision"] for look in edited.looks] == ["precise enough"], "replayed from the jobs that ran"
    assert all(r.get("attempts", 0) == 0 for r in edited.records.values())
    assert {j.hash for j in edited.jobs} <= ran
    # An edit that continues past the first look replays the waves that ran, one look each, then goes on.
    narrower = json.loads(json.dumps(SPEC))
    narrower["answer"]["targetHalfWidth"] = 2.5
    replayed = run(narrower)
    assert [look["seeds"] for look in replayed.looks][:len(looks)] == [look["seeds"] for look in looks]
    assert all(replayed.records[h].get("attempts", 0) == 0 for h in ran), "what ran is not run again"


def test_before_the_first_look_nothing_is_claimed_and_a_wave_of_failed_jobs_still_gets_its_look():
    """A report in the middle of the first wave would be a look of its own: it claims nothing. A wave
    whose evaluate jobs all failed (none still to come) is complete: its look is taken on what there is."""
    from tests.operator.simulated_world import REGIMES, replicate

    design = answer.Design(0.03, first=4, per_look=1, max_seeds=6)
    import numpy as np
    runs = replicate(np.random.default_rng(0), 3, True, REGIMES["seed noise small"], size=3.0, first_seed=1).runs
    early = report.build(report.Inputs("x", "x", runs, design=design))
    assert report.claims(early) == [] and early["answer"]["look"] == 0
    assert report.claims(report.build(report.Inputs("x", "x", runs))) != [], "the same runs claim without a design"
    # seed 4 planned, its evaluate jobs failed (not missing): the first look is taken on seeds 1-3
    failed_wave = report.Inputs("x", "x", runs, design=design, planned_seeds=4)
    assert [look["seeds"] for look in report.history(failed_wave)] == [4]
    waiting = report.Inputs("x", "x", runs, design=design, planned_seeds=4, missing_seeds=[4])
    assert report.history(waiting) == [], "a job of the wave still to come: no look yet"
