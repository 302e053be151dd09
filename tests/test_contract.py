"""The seam between the control plane and the trainer: one contract (stilts_contract), and tests
that the two sides cannot drift apart."""

import copy

import pytest
from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

from stilts import plan as P
from stilts.spec import RULES, ExperimentSpec, SpecError, check_contract_rules, check_rules, parse_spec
from stilts_contract import tasks
from stilts_contract.job import applicable

backbone = st.fixed_dictionaries({
    "model": st.sampled_from(["stilts/tiny-xlmr", "FacebookAI/xlm-roberta-large"]),
    "architecture": st.sampled_from(["dense", "moe"]),
    "workers": st.integers(1, 3),
    "gpusPerWorker": st.sampled_from([0, 1, 2, 4, 8]),
})


@st.composite
def specs(draw):
    """Specs that write out every field the cross-field rules read, valid or not."""
    bbs = draw(st.lists(backbone, min_size=1, max_size=3))
    for i, b in enumerate(bbs):
        b["name"] = f"b{i}"
        if b["architecture"] == "moe":
            experts = draw(st.sampled_from([2, 4, 8]))
            b["moe"] = {"experts": experts, "topK": draw(st.sampled_from([1, 2])),
                        "expertParallelSize": draw(st.sampled_from([1, 2, 4, 8])),
                        "upcycleSteps": draw(st.sampled_from([0, 10]))}
    phase = lambda: {"batchSize": draw(st.sampled_from([8, 16, 24, 32])),  # noqa: E731
                     "microBatchSize": draw(st.sampled_from([1, 2, 4])),
                     "maxSeqLength": draw(st.sampled_from([64, 256]))}
    return {
        "dataSource": draw(st.sampled_from(["hub", "synthetic"])),
        "dataDir": draw(st.sampled_from(["", "/data"])),
        "backbones": bbs,
        "intermediateTasks": draw(st.lists(st.sampled_from(tasks.INTERMEDIATE_TASKS), unique=True, max_size=3)),
        "baseline": True,
        "seeds": [1],
        "training": {"pretrain": phase(), "intermediate": phase(), "target": phase()},
        "deepspeed": {"zeroStage": draw(st.sampled_from([2, 3])), "precision": "bf16"},
    }


def python_verdict(raw: dict) -> bool:
    try:
        check_contract_rules(ExperimentSpec.model_validate(raw))
        return True
    except (ValidationError, SpecError):
        return False


def cel_verdict(raw: dict) -> bool:
    try:
        check_rules(raw)
        return True
    except SpecError:
        return False


@settings(max_examples=150, deadline=None)
@given(specs())
def test_the_crds_cel_rules_agree_with_the_contracts_rules(raw):
    """The API server (CEL) refuses exactly what the trainer would refuse at start-up (stilts_contract.rules)."""
    assert cel_verdict(copy.deepcopy(raw)) == python_verdict(raw), raw


def test_the_agreement_test_sees_every_mirrored_rule():
    """Each cross-field rule the generator can break is broken in some generated spec (no vacuous pass)."""
    broken = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(specs())
    def collect(raw):
        for _, expr, message in RULES:
            try:
                check_rules(raw)
            except SpecError as err:
                broken.add(str(err).split(":")[0][:60])
    collect()
    assert len(broken) >= 6, broken


def planned_bodies(raw):
    """Each job with the body its hash covers (and the paths an executor adds): a field the trainer reads
    that is not there would neither be chosen by the control plane nor rerun the job when it changes."""
    planner = P.Planner(parse_spec(raw))
    for job in planner.plan():
        body = {**planner.hashed[job.hash], "experiment": "x", "output": "/out",
                "parent": "/parent" if job.parent else None, "metricsPort": 9400, "checkpointEverySteps": 100,
                "cacheDir": "/cache"}
        yield job, body


def missing_fields(body: dict) -> set[str]:
    """What the trainer reads for this job (stilts_contract.job.applicable) that the body does not write."""
    def has(path: str) -> bool:
        node = body
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True
    reads_local = "dataDir" in applicable(body["phase"], body.get("task"), body["backbone"]["architecture"], True) \
        and any(tasks.local_members(t) for t in ([body["task"]] if body.get("task") else [])
                + body.get("prefetch", {}).get("tasks", []))
    wanted = applicable(body["phase"], body.get("task"), body["backbone"]["architecture"], reads_local,
                        body["dataSource"], mixes_mlm="mlmMix" in body)
    return {f for f in wanted if not has(f)}


@settings(max_examples=40, deadline=None)
@given(specs())
def test_the_planner_writes_every_field_the_trainer_reads(raw):
    """No job relies on a trainer default the control plane never chose: a field the planner stops
    writing (or a new contract field it does not write) fails here."""
    raw = {**raw, "deepspeed": {"zeroStage": 2, "precision": "bf16"}, "dataDir": "/data"}
    for b in raw["backbones"]:
        b["workers"], b["gpusPerWorker"] = 1, 0
        if b.get("moe"):
            b["moe"]["expertParallelSize"] = 1
        if b["model"].startswith("stilts/"):
            raw["dataSource"] = "synthetic"
    for phase in raw["training"].values():
        phase["batchSize"], phase["microBatchSize"], phase["maxSeqLength"] = 8, 2, 64
    if raw["intermediateTasks"]:  # the ablation's jobs write its settings too
        raw["mlmMix"] = {"weight": 0.3}
    for job, body in planned_bodies(raw):
        assert missing_fields(body) == set(), (job.name, missing_fields(body))


def test_a_dropped_planner_field_is_caught():
    raw = {"dataSource": "synthetic", "intermediateTasks": ["squad"], "seeds": [1], "mlmMix": {},
           "backbones": [{"name": "m", "model": "stilts/tiny-xlmr", "architecture": "moe", "gpusPerWorker": 0,
                          "moe": {"experts": 4, "expertParallelSize": 1}}]}
    job, body = next((j, b) for j, b in planned_bodies(raw) if j.phase == "intermediate" and "mlmMix" in b)
    assert missing_fields(body) == set()
    for path in ("hyperparameters.docStride", "hyperparameters.weightDecay", "backbone.moe.expertParallelSize",
                 "seed", "deepspeed.zeroStage", "syntheticWorld", "mlmMix.weight", "mlmMix.languages"):
        dropped = copy.deepcopy(body)
        node = dropped
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        del node[leaf]
        assert missing_fields(dropped) == {path}


def test_the_trainer_and_the_operator_share_one_default_for_each_field():
    """The spec's fields are the contract's: the same default on both sides of the seam."""
    from stilts.spec import Backbone
    from stilts_contract.job import BackboneRef, MoE, PhaseTraining
    from stilts_trainer.job import MoE as TrainerMoE
    assert TrainerMoE is MoE and issubclass(Backbone, BackboneRef)
    spec = parse_spec({"backbones": [{"name": "m", "model": "x", "architecture": "moe"}]})
    assert spec.backbones[0].moe_settings.expert_parallel_size == MoE().expert_parallel_size
    assert spec.training.target.model_dump() == PhaseTraining().model_dump()


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_task_traits_are_consistent(name):
    t = tasks.get(name)
    assert t.format in tasks.FORMATS + (tasks.MULTITASK,)
    assert bool(t.members) == (t.format == tasks.MULTITASK)
    assert all(tasks.get(m).format != tasks.MULTITASK for m in t.members)
