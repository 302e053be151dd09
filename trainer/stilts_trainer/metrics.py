"""Trainer metrics on rank 0: Prometheus gauges, served while a phase runs when the job names a port,
and the same figures as TensorBoard curves in the job's directory (`tensorboard/`), which outlive it."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from stilts_contract.names import EVENTS_DIR

from .trainer_status import StatusReporter

LABELS = ("experiment", "job_hash", "phase", "backbone", "task")


class TrainerMetrics:
    def __init__(self, labels: dict[str, str], port: int = 0, registry: CollectorRegistry | None = None,
                 events: Path | None = None, tracker=None):
        self.registry = registry or CollectorRegistry()
        self.tracker = tracker  # MLflow (tracking.py): the same curves, in the job's run
        self._labels = labels
        self._step = 0
        self._events_dir, self.events = events, None
        self.status = StatusReporter.from_env()  # a TrainJob's status.trainerStatus, where Trainer asks for it
        self._last: tuple = ()
        self._dev: float | None = None

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=self.registry).labels(**labels)

        self.loss = gauge("stilts_trainer_loss", "Training loss at the last report (every 10 optimizer steps)")
        self.steps = gauge("stilts_trainer_step", "Optimizer steps done in this phase")
        self.total_steps = gauge("stilts_trainer_total_steps", "Optimizer steps this phase will take (early stopping "
                                 "may end it sooner)")
        self.eta = gauge("stilts_trainer_eta_seconds", "Seconds left at the phase's recent pace")
        self.tokens_per_second = gauge("stilts_trainer_tokens_per_second", "Non-padding tokens per second, all ranks")
        self.learning_rate = gauge("stilts_trainer_learning_rate", "Current learning rate")
        self.dev = gauge("stilts_trainer_dev_score", "Last English dev score used for model selection")
        self.aux = gauge("stilts_trainer_moe_aux_loss", "MoE load-balancing loss, summed over MoE layers")
        self.dropped = gauge("stilts_trainer_moe_dropped_token_share", "Share of token routes dropped for capacity")
        self.expert_share = Gauge("stilts_trainer_moe_expert_token_share", "Share of routed tokens per expert "
                                  "(all MoE layers)", LABELS + ("expert",), registry=self.registry)
        self.head_loss = Gauge("stilts_trainer_head_loss", "Training loss of each task head on its last batch before "
                               "the last report (nine heads in multitask)", LABELS + ("head",), registry=self.registry)
        self.server = None
        if port:
            self.server, _ = start_http_server(port, registry=self.registry)

    def step(self, step: int, loss: float, lr: float, tokens_per_second: float, total: int = 0,
             eta: float | None = None) -> None:
        self._step = step
        self.steps.set(step)
        if total:
            self.total_steps.set(total)
        if eta is not None:
            self.eta.set(eta)
        self.loss.set(loss)
        self.learning_rate.set(lr)
        self.tokens_per_second.set(tokens_per_second)
        self._scalar("train/loss", loss)
        self._scalar("train/learning_rate", lr)
        self._scalar("train/tokens_per_second", tokens_per_second)
        self._last = (step, total, eta, {"loss": loss, "learningRate": lr, "tokensPerSecond": tokens_per_second})
        self._report_status(final=False)

    def _report_status(self, final: bool) -> None:
        if self.status is None or not self._last:
            return
        step, total, eta, figures = self._last
        if self._dev is not None:
            figures = {**figures, "devScore": self._dev}
        self.status.report(step, total, eta, figures, final=final)

    def head(self, head: str, loss: float) -> None:
        self.head_loss.labels(**self._labels, head=head).set(loss)
        self._scalar(f"loss/{head}", loss)

    def moe(self, aux_loss: float, stats: dict) -> None:
        self.aux.set(aux_loss)
        self._scalar("moe/aux_loss", aux_loss)
        if stats:
            self.dropped.set(stats["dropped_share"])
            self._scalar("moe/dropped_token_share", stats["dropped_share"])
            for expert, share in enumerate(stats["expert_share"]):
                self.expert_share.labels(**self._labels, expert=str(expert)).set(share)
                self._scalar(f"moe/expert_token_share/{expert}", share)

    def dev_score(self, score: float, selected: bool = False) -> None:
        """The English dev score model selection used (on its subset), or the selected model's on all
        of English dev (`selected`)."""
        self.dev.set(score)
        self._dev = score
        self._scalar("dev/selected_model_full" if selected else "dev/score", score)

    def start(self, step: int) -> None:
        """Training starts (or resumes) after `step`: curves written past it by an attempt that was
        stopped are hidden (TensorBoard's purge), since this attempt writes those steps again."""
        self._step = step
        if self._events_dir is not None and self.events is None:
            from torch.utils.tensorboard import SummaryWriter

            self.events = SummaryWriter(str(self._events_dir), purge_step=step + 1 if step else None, flush_secs=30)

    def _scalar(self, tag: str, value: float) -> None:
        if self.tracker is not None:
            self.tracker.add(tag, value, self._step)
        if self.events is None:
            self.start(self._step)
        if self.events is not None:
            self.events.add_scalar(tag, value, self._step)

    def flush(self) -> None:
        if self.events is not None:
            self.events.flush()
        if self.tracker is not None:  # a preempted phase: what it logged reaches the run before it exits
            self.tracker.flush()

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
        if self.status is not None:
            self._report_status(final=True)
            self.status.close()
        if self.events is not None:
            self.events.close()
        if self.server:
            self.server.shutdown()
