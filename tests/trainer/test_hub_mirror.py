"""The hub code path, offline: a mirror root in the hub's own layout (models/<id>, datasets/<id>
with parquet files and the README `configs` block) stands in for the hubs, as on an air-gapped
cluster. prefetch -> target -> evaluate with dataSource: hub."""

import json
import shutil

import pytest

from stilts_trainer import synthetic, tasks
from tests.conftest import job_body, run_trainer
from tests.trainer.test_data import write_hub_layout

pytestmark = pytest.mark.slow
MODEL = "FacebookAI/xlm-roberta-base"


@pytest.fixture
def mirror(tmp_path, pretrained):
    root = tmp_path / "mirror"
    shutil.copytree(pretrained / "model", root / "models" / MODEL)
    mnli = tasks.get("mnli")
    write_hub_layout(root, "nyu-mll/glue", {"mnli": {
        "train": mnli.synthetic("train", 1, "en")[:2000], "validation_matched": mnli.synthetic("dev", 1, "en")[:300],
        "validation_mismatched": mnli.synthetic("test", 1, "en")[:50]}})
    xnli = tasks.get("xnli")
    write_hub_layout(root, "facebook/xnli", {lang: {"validation": xnli.synthetic("dev", 0, lang)[:100],
                                                    "test": xnli.synthetic("test", 0, lang)[:100]}
                                             for lang in synthetic.XNLI_LANGUAGES})
    return root


def test_prefetch_then_train_and_evaluate_from_a_mirror(tmp_path, mirror):
    hub = {"dataSource": "hub", "mirror": str(mirror), "cacheDir": str(tmp_path / "hf-cache"),
           "backbone": {"name": "dense", "model": MODEL}}
    r = run_trainer(job_body("prefetch", tmp_path / "prefetch", None, prefetch={"models": [MODEL],
                                                                                "tasks": ["mnli", "xnli"]}, **hub),
                    tmp_path, name="p.json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "prefetch" / "COMPLETE").read_text())["fetched"] == [MODEL, "mnli", "xnli"]
    assert any((tmp_path / "hf-cache").iterdir()), "datasets were read into the shared cache"
    r = run_trainer(job_body("target", tmp_path / "target", None, task="mnli", **hub), tmp_path, name="t.json")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_trainer(job_body("evaluate", tmp_path / "eval", tmp_path / "target", task="xnli",
                             languages=["en", "de", "zh"], **hub), tmp_path, name="e.json")
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["languages"]) == {"en", "de", "zh"}


def test_a_model_missing_from_the_mirror_fails_with_its_path(tmp_path, mirror):
    hub = {"dataSource": "hub", "mirror": str(mirror), "cacheDir": str(tmp_path / "hf-cache"),
           "backbone": {"name": "dense", "model": "FacebookAI/xlm-roberta-large"}}
    r = run_trainer(job_body("target", tmp_path / "target", None, task="mnli", **hub), tmp_path)
    assert r.returncode != 0
    assert "xlm-roberta-large" in r.stderr
    assert not (tmp_path / "target" / "COMPLETE").exists()
