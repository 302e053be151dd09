import copy

import pytest
from hypothesis import given, settings, strategies as st

from stilts import plan as P
from stilts.spec import INTERMEDIATE_TASKS, XNLI_LANGUAGES, SpecError, parse_spec

plan = P.plan

backbone = st.fixed_dictionaries({
    "model": st.sampled_from(["stilts/tiny-xlmr", "stilts/mini-xlmr"]),
    "architecture": st.sampled_from(["dense", "moe"]),
})


@st.composite
def specs(draw):
    bbs = draw(st.lists(backbone, min_size=1, max_size=3))
    for i, b in enumerate(bbs):
        b["name"] = f"b{i}"
        b["gpusPerWorker"] = 0
        b["workers"] = 2
        if b["architecture"] == "moe":
            b["moe"] = {"experts": 4, "expertParallelSize": 2,
                        "upcycleSteps": draw(st.sampled_from([0, 10]))}
    tasks = draw(st.lists(st.sampled_from(INTERMEDIATE_TASKS), unique=True, max_size=3))
    return {
        "dataSource": "synthetic",
        "backbones": bbs,
        "intermediateTasks": tasks,
        "baseline": draw(st.booleans()) or not tasks,
        "seeds": draw(st.lists(st.integers(1, 50), unique=True, min_size=1, max_size=3)),
        "target": {"languages": draw(st.lists(st.sampled_from(XNLI_LANGUAGES), unique=True, min_size=1, max_size=4))},
        "training": {"target": {"learningRate": draw(st.sampled_from([1e-5, 2e-5]))}},
    }


@settings(max_examples=60, deadline=None)
@given(specs())
def test_plan_is_a_dag_with_parents_first_and_stable_hashes(raw):
    jobs = P.plan(parse_spec(raw))
    position = {j.hash: i for i, j in enumerate(jobs)}
    assert len(position) == len(jobs)
    for j in jobs:
        for dep in j.depends_on:
            assert position[dep] < position[j.hash]
    assert [j.hash for j in P.plan(parse_spec(copy.deepcopy(raw)))] == [j.hash for j in jobs]
    # Backbones that differ only by name are the same work: one job per run for all of them. An MoE that
    # continues pretraining adds a dense control of the same checkpoint with the same continued steps.
    arms = {(b.model, b.architecture, str(b.moe_settings), steps) for b, steps in P.arms(parse_spec(raw))}
    runs = len(arms) * (len(raw["intermediateTasks"]) + raw["baseline"]) * len(raw["seeds"])
    assert sum(j.phase == "evaluate" for j in jobs) == runs


@settings(max_examples=40, deadline=None)
@given(specs(), st.sampled_from(["seed", "task"]))
def test_adding_a_seed_or_task_keeps_every_existing_job(raw, what):
    before = {j.hash for j in P.plan(parse_spec(raw))}
    grown = copy.deepcopy(raw)
    if what == "seed":
        grown["seeds"].append(max(grown["seeds"]) + 1)
    else:
        missing = [t for t in INTERMEDIATE_TASKS if t not in grown["intermediateTasks"]]
        if not missing:
            return
        grown["intermediateTasks"].append(missing[0])
    after = {j.hash for j in P.plan(parse_spec(grown))}
    assert before < after


@settings(max_examples=40, deadline=None)
@given(specs())
def test_hash_changes_with_inputs_that_matter_and_only_downstream(raw):
    base = {j.name: j.hash for j in P.plan(parse_spec(raw))}
    changed = copy.deepcopy(raw)
    changed["training"]["target"]["learningRate"] = 3e-5
    new = {j.name: j.hash for j in P.plan(parse_spec(changed))}
    for name, h in base.items():
        phase = name.rsplit("-", 1)[-1]
        if phase in ("target", "evaluate"):
            assert new[name] != h, name
        else:
            assert new[name] == h, name


def test_display_names_and_launch_shape_do_not_change_hashes():
    raw = {"dataSource": "synthetic", "backbones": [{"name": "a", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}],
           "intermediateTasks": ["qqp"], "seeds": [1]}
    renamed = copy.deepcopy(raw)
    renamed["backbones"][0].update(name="b", workers=4)
    assert [j.hash for j in P.plan(parse_spec(raw))] == [j.hash for j in P.plan(parse_spec(renamed))]


def test_backbones_from_one_tiny_model_share_its_pretrain_and_moe_upcycles_from_it():
    spec = parse_spec({"dataSource": "synthetic", "intermediateTasks": ["qqp"], "seeds": [1], "backbones": [
        {"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0},
        {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe", "workers": 2, "gpusPerWorker": 0,
         "moe": {"experts": 4, "expertParallelSize": 2, "upcycleSteps": 50}}]})
    jobs = P.plan(spec)
    pretrains = [j for j in jobs if j.phase == "pretrain"]
    assert len(pretrains) == 3
    dense_root = next(j for j in pretrains if j.parent is None)
    upcycle = next(j for j in pretrains if j.job.backbone.architecture == "moe")
    control = next(j for j in pretrains if j.backbone == "dense-cp50")
    assert upcycle.parent == dense_root.hash and upcycle.job.hyperparameters.max_steps == 50
    # The dense control continues pretraining from the same parent, on the same data, for the same steps.
    assert control.parent == dense_root.hash and control.job.backbone.architecture == "dense"
    assert control.job.hyperparameters == upcycle.job.hyperparameters
    firsts = [j for j in jobs if j.phase in ("intermediate", "target") and j.parent in (dense_root.hash, upcycle.hash,
                                                                                        control.hash)]
    assert {j.backbone for j in firsts if j.parent == upcycle.hash} == {"moe"}
    assert {j.backbone for j in firsts if j.parent == control.hash} == {"dense-cp50"}
    assert {j.backbone for j in firsts if j.parent == dense_root.hash} == {"dense"}
    evaluate = next(j for j in jobs if j.phase == "evaluate" and j.backbone == "dense-cp50")
    assert evaluate.job.labels["pretraining"] == "continued masked-LM, 50 steps"


def test_hub_experiments_prefetch_first_without_changing_hashes():
    raw = {"backbones": [{"name": "d", "model": "FacebookAI/xlm-roberta-large"}], "intermediateTasks": ["qqp"],
           "seeds": [1]}
    jobs = P.plan(parse_spec(raw))
    assert jobs[0].phase == "prefetch"
    prefetch = jobs[0].job.prefetch
    assert (prefetch.models, prefetch.tasks) == (["FacebookAI/xlm-roberta-large"], ["mnli", "qqp", "xnli"])
    assert all(jobs[0].hash in j.after for j in jobs[1:])
    more = copy.deepcopy(raw)
    more["intermediateTasks"].append("anli")
    kept = {j.hash for j in P.plan(parse_spec(more)) if j.phase != "prefetch"}
    assert {j.hash for j in jobs if j.phase != "prefetch"} <= kept


def test_task_specific_settings_reach_only_the_jobs_that_read_them():
    raw = {"backbones": [{"name": "d", "model": "FacebookAI/xlm-roberta-large"}], "seeds": [1], "dataDir": "/data",
           "intermediateTasks": ["anli", "squad", "ccg", "multitask"]}
    jobs = P.plan(parse_spec(raw))
    inter = {j.intermediate_task: j for j in jobs if j.phase == "intermediate"}
    assert {t for t, j in inter.items() if j.job.data_dir} == {"ccg", "multitask"}
    assert jobs[0].phase == "prefetch" and not jobs[0].job.data_dir, "local data holds up only its readers"
    assert "ccg" not in jobs[0].job.prefetch.tasks and "squad" in jobs[0].job.prefetch.tasks
    assert not any(j.job.data_dir for j in jobs if j.phase in ("target", "evaluate"))
    for setting, value, readers in (("docStride", 64, {"squad", "multitask"}),
                                    ("multitaskTemperature", 3.0, {"multitask"}), ("multitaskCap", 1000, {"multitask"})):
        changed = copy.deepcopy(raw)
        changed["training"] = {"intermediate": {setting: value}}
        moved = {j.intermediate_task for j in P.plan(parse_spec(changed))
                 if j.phase == "intermediate" and j.hash != inter[j.intermediate_task].hash}
        assert moved == readers, f"{setting} reruns only the jobs that read it"


@settings(max_examples=25, deadline=None)
@given(raw=specs())
def test_every_planned_job_is_a_valid_trainer_job(raw, tmp_path_factory):
    from stilts_trainer.job import parse
    root = tmp_path_factory.mktemp("jobs")
    for j in P.plan(parse_spec(raw)):
        parent = None
        if j.parent:  # the trainer checks the parent is complete
            parent = root / j.parent
            parent.mkdir(exist_ok=True)
            (parent / "COMPLETE").write_text("{}")
        parse(P.job_json(j, str(root / j.hash), str(parent) if parent else None, experiment="x"))


def test_an_upgrade_reruns_nothing_and_new_settings_rerun_only_what_they_change():
    """The hashes below are what the release before `groupByLength` planned for this spec. Off, its
    default, trains as that release did, so it stays out of the hash; on, it reruns the jobs it changes."""
    raw = {"dataSource": "synthetic", "intermediateTasks": ["qqp"], "seeds": [1],
           "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}]}
    before = {"dense-pretrain": "47b2157bd04af0ee", "dense-qqp-s1-intermediate": "b014f4953d65f16b",
              "dense-qqp-s1-target": "2d44bfdd4edc99a9", "dense-qqp-s1-evaluate": "25ba0a562f9f8c5f",
              "dense-none-s1-target": "37341fb9b71b7ac6", "dense-none-s1-evaluate": "85bfc04ee2896b7d"}
    jobs = P.plan(parse_spec(raw))
    assert {j.name: j.hash for j in jobs} == before
    # Every job's typed hyperparameters carry it, at the value that trains as that release did.
    assert all(j.job.hyperparameters.group_by_length is False for j in jobs)
    grouped = copy.deepcopy(raw)
    grouped["training"] = {"target": {"groupByLength": True}}
    changed = {j.name for j in P.plan(parse_spec(grouped)) if before[j.name] != j.hash}
    assert changed == {"dense-qqp-s1-target", "dense-qqp-s1-evaluate", "dense-none-s1-target",
                       "dense-none-s1-evaluate"}
    # compileLayers (torch.compile per layer) came later too: off plans the hashes above; on changes the
    # arithmetic's rounding, so every job reruns.
    assert all(j.job.deepspeed.compile_layers is False for j in jobs)
    compiled = P.plan(parse_spec({**raw, "deepspeed": {"compileLayers": True}}))
    assert all(before[j.name] != j.hash and j.job.deepspeed.compile_layers for j in compiled)


def test_the_mlm_ablation_is_its_own_arm_in_the_plan():
    from stilts_contract.names import MLM_ARM

    raw = {"dataSource": "synthetic", "intermediateTasks": ["anli", "qqp"], "seeds": [1, 2],
           "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}]}
    plain = plan(parse_spec(raw))
    mixed = plan(parse_spec({**raw, "mlmMix": {"weight": 0.25, "languages": ["en", "sw"]}}))
    runs = lambda jobs: {(j.intermediate_task, j.seed) for j in jobs if j.phase == "evaluate"}  # noqa: E731
    assert runs(mixed) == runs(plain) | {(t + MLM_ARM, s) for t in ("anli", "qqp") for s in (1, 2)}
    # The plain runs are the same jobs (same hashes): adding the ablation reruns nothing.
    assert {j.hash for j in plain} <= {j.hash for j in mixed}
    ablation = [j for j in mixed if j.phase == "intermediate" and j.intermediate_task.endswith(MLM_ARM)]
    assert len(ablation) == 4
    for job in ablation:
        assert job.job.task == job.intermediate_task.removesuffix(MLM_ARM)
        assert job.job.mlm_mix.weight == 0.25 and job.job.mlm_mix.languages == ["en", "sw"]
        assert job.job.labels["intermediateTask"] == job.intermediate_task
    assert not any(j.job.mlm_mix for j in mixed if j.phase != "intermediate")


def test_the_mlm_ablation_needs_intermediate_tasks():
    raw = {"dataSource": "synthetic", "intermediateTasks": [], "mlmMix": {},
           "backbones": [{"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}]}
    with pytest.raises(SpecError, match="spec.mlmMix"):
        parse_spec(raw)


def test_control_arms_launch_like_the_dense_backbone_they_copy():
    """The <dense>-cp<steps> control arm is not in spec.backbones; its jobs must still run with the dense
    backbone's shape and requests (it once fell back to defaults and asked for a GPU with gpusPerWorker 0)."""
    from stilts import manifests

    spec = parse_spec({"dataSource": "synthetic", "intermediateTasks": ["anli"], "seeds": [1], "backbones": [
        {"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0, "workers": 2,
         "resources": {"cpu": "3", "memory": "5Gi"}},
        {"name": "moe", "model": "stilts/tiny-xlmr", "architecture": "moe", "gpusPerWorker": 0, "workers": 2,
         "moe": {"experts": 4, "expertParallelSize": 2, "upcycleSteps": 50}}]})
    jobs = plan(spec)
    control = [j for j in jobs if j.backbone == "dense-cp50"]
    assert {j.phase for j in control} == {"pretrain", "intermediate", "target", "evaluate"}
    for job in control:
        assert (job.launch.workers, job.launch.processes, job.launch.gpus) == (2, 1, 0)
        assert manifests.resources(job) == {"requests": {"cpu": "3", "memory": "5Gi"}, "limits": {"memory": "5Gi"}}
    moe = next(j for j in jobs if j.backbone == "moe" and j.phase == "target")
    assert manifests.resources(moe)["requests"] == {"cpu": "4", "memory": "16Gi"}  # the MoE default, no GPU


def test_a_spec_the_trainer_would_refuse_is_refused_at_plan_time(monkeypatch):
    """plan.Job carries the job as the trainer's own model validated it: what the trainer would reject
    at start-up (here its synthetic world) stops the plan instead, naming the field."""
    monkeypatch.setattr(P, "SYNTHETIC_WORLD", 999)
    with pytest.raises(SpecError, match="syntheticWorld"):
        plan(parse_spec({"dataSource": "synthetic", "seeds": [1], "backbones": [
            {"name": "dense", "model": "stilts/tiny-xlmr", "gpusPerWorker": 0}]}))
