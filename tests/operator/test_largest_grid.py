"""The largest grid the CRD admits (8 backbones x every intermediate task x 16 seeds) driven to
Succeeded by the pure scheduler, every summary as large as the schema allows: the objects the
operator writes (the experiment's status, its records ConfigMap, its results ConfigMap) each stay
under the 1 MiB that the API server accepts for a ConfigMap (etcd's request limit is 1.5 MiB)."""

import json

import pytest

from stilts import manifests
from stilts.plan import plan
from stilts.reconcile import Observed, Policy, reconcile
from stilts.spec import parse_spec
from stilts.status import summarize
from stilts_contract.names import XNLI_LANGUAGES
from stilts_contract.tasks import INTERMEDIATE_TASKS

MIB = 2 ** 20
# The longest a float in JSON gets, so every accuracy is as long as it can be.
LONG = 0.12345678901234568


def largest_spec() -> dict:
    return {"dataSource": "hub", "intermediateTasks": list(INTERMEDIATE_TASKS), "seeds": list(range(1, 17)),
            "maxConcurrentJobs": 1000, "dataDir": "/data",
            "backbones": [{"name": f"backbone-number-{i}", "model": f"some-organisation/a-long-model-name-{i}",
                           "gpusPerWorker": 8} for i in range(8)]}


def largest_summary(job) -> str:
    body = {"phase": job.phase, "jobHash": job.hash, "task": job.intermediate_task or None, "seed": 16, "worldSize": 64,
            "seconds": 123456.78901234567, "steps": 1234567, "bestStep": 1234567, "stoppedEarly": True,
            "devScore": LONG}
    if job.phase == "evaluate":
        body.update(test={lang: LONG for lang in XNLI_LANGUAGES}, average={"dev": LONG, "test": LONG},
                    predicted={lang: [LONG] * 3 for lang in XNLI_LANGUAGES}, testItems=5010,
                    itemsDigest="0123456789abcdef")
    if job.phase == "pretrain":
        body["alignment"] = LONG
    return json.dumps(body)


@pytest.fixture(scope="module")
def driven():
    spec = parse_spec(largest_spec())
    jobs = plan(spec)
    by_hash = {j.hash: j for j in jobs}

    def child(job_hash, attempt):
        return f"{job_hash}-{attempt}"

    records, results, now = {}, {}, 0.0
    for _ in range(10):  # pretrain, continued pretraining, intermediate, target, evaluate, ...
        observed = {child(h, r["attempts"]): Observed("Succeeded", summary=largest_summary(by_hash[h]))
                    for h, r in records.items() if r["state"] in ("Starting", "Running")}
        d = reconcile(jobs, records, observed, now, Policy.of(spec), child)
        records = d.records
        results.update(d.results)
        now += 60
        if all(r["state"] == "Succeeded" for r in records.values()) and len(records) == len(jobs):
            break
    return spec, jobs, records, results, now


def test_the_largest_grid_reaches_succeeded(driven):
    _, jobs, records, results, _ = driven
    assert len(jobs) > 1500, "the grid the CRD allows is large"
    assert {r["state"] for r in records.values()} == {"Succeeded"}
    assert len(results) == len(jobs)


def test_every_object_the_operator_writes_stays_under_one_mib(driven):
    _, jobs, records, results, now = driven
    experiment = {"metadata": {"name": "x" * 63, "namespace": "n" * 63, "uid": "u" * 36}}
    status = summarize(jobs, records, {}, 1, now)
    records_map = manifests.store(experiment, "records", {"records": json.dumps(records, separators=(",", ":"),
                                                                                sort_keys=True)})
    # The worst case: every evaluate job's items given up (the operator then marks its result).
    results = {h: {**r, "itemsMissing": True} if "test" in r else r for h, r in results.items()}
    results_map = manifests.store(experiment, "results", {h: json.dumps(r, separators=(",", ":"), sort_keys=True)
                                                          for h, r in results.items()})
    sizes = {name: len(json.dumps(obj).encode()) for name, obj in
             (("status", status), ("records", records_map), ("results", results_map))}
    print(f"{len(jobs)} jobs: " + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sizes.items()))
    assert sizes["status"] < 64 * 1024, sizes
    assert sizes["records"] < MIB and sizes["results"] < MIB, sizes


def test_every_runs_items_fit_the_items_configmaps(driven):
    """Each evaluate job's per-item results (XNLI: 15 languages x 5,010 items) as the operator stores them,
    in the ConfigMap its hash names: the fullest one stays under 1 MiB."""
    import random

    from stilts_contract import items

    _, jobs, _, _, _ = driven
    rng = random.Random(0)
    run = items.encode({lang: "".join(rng.choice("01") for _ in range(5010)) for lang in XNLI_LANGUAGES})
    value = json.dumps(run, separators=(",", ":"))
    stores: dict[str, int] = {}
    for job in jobs:
        if job.phase == "evaluate":
            name = manifests.items_store("x" * 40, job.hash)
            stores[name] = stores.get(name, 0) + len(job.hash) + len(value) + 6
    fullest = max(stores.values())
    print(f"{sum(j.phase == 'evaluate' for j in jobs)} runs in {len(stores)} items ConfigMaps, the fullest "
          f"{fullest / 1024:.0f} KiB")
    assert len(stores) <= manifests.ITEMS_STORES and fullest < MIB - 4096
