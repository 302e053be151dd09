"""Trainer metrics on rank 0 (Prometheus), served while a phase runs when the job names a port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, start_http_server

LABELS = ("experiment", "job_hash", "phase", "backbone", "task")


class TrainerMetrics:
    def __init__(self, labels: dict[str, str], port: int = 0, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._labels = labels

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
        self.steps.set(step)
        if total:
            self.total_steps.set(total)
        if eta is not None:
            self.eta.set(eta)
        self.loss.set(loss)
        self.learning_rate.set(lr)
        self.tokens_per_second.set(tokens_per_second)

    def head(self, head: str, loss: float) -> None:
        self.head_loss.labels(**self._labels, head=head).set(loss)

    def moe(self, aux_loss: float, stats: dict) -> None:
        self.aux.set(aux_loss)
        if stats:
            self.dropped.set(stats["dropped_share"])
            for expert, share in enumerate(stats["expert_share"]):
                self.expert_share.labels(**self._labels, expert=str(expert)).set(share)

    def dev_score(self, score: float) -> None:
        self.dev.set(score)

    def close(self) -> None:
        if self.server:
            self.server.shutdown()
