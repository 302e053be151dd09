import urllib.request

from stilts_trainer.metrics import TrainerMetrics
from tests.conftest import free_port


def test_rank0_serves_prometheus_metrics_on_the_jobs_port():
    port = free_port()
    m = TrainerMetrics({"experiment": "e", "job_hash": "h", "phase": "target", "backbone": "dense", "task": "mnli"},
                       port)
    try:
        m.step(7, 0.5, 1e-5, 1234.0)
        m.dev_score(0.8)
        m.head("squad", 1.25)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        m.close()
    labels = 'backbone="dense",experiment="e",job_hash="h",phase="target",task="mnli"'
    for line in (f"stilts_trainer_step{{{labels}}} 7.0", f"stilts_trainer_loss{{{labels}}} 0.5",
                 f"stilts_trainer_tokens_per_second{{{labels}}} 1234.0", f"stilts_trainer_dev_score{{{labels}}} 0.8"):
        assert line in text, text
    head = [line for line in text.splitlines() if line.startswith("stilts_trainer_head_loss{")]
    assert len(head) == 1 and 'head="squad"' in head[0] and head[0].endswith(" 1.25"), head


def test_no_port_no_server():
    assert TrainerMetrics({k: "" for k in ("experiment", "job_hash", "phase", "backbone", "task")}, 0).server is None
