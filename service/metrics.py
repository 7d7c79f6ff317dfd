"""Prometheus metrics, in a registry of the app's own (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from protocols.result import Result


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mgw_http_requests_total",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mgw_http_request_duration_seconds",
            "HTTP request latency (until the response starts streaming)",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.tasks = Counter(
            "mgw_tasks_total",
            "tasks that reached a final status",
            ["protocol", "status"],
            registry=self.registry,
        )
        self.task_seconds = Histogram(
            "mgw_task_duration_seconds",
            "task run time",
            ["protocol"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.tokens = Counter(
            "mgw_tokens_total",
            "tokens by side (local, remote) and kind (prompt, completion)",
            ["side", "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "mgw_remote_cost_usd_total", "remote spend in USD", ["protocol"], registry=self.registry
        )
        self.budget_overruns = Counter(
            "mgw_budget_overruns_total",
            "tasks billed more than their reservation (a provider reported more usage than the "
            "worst case); the key's balance went negative",
            ["protocol"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mgw_queue_depth", "tasks waiting in the queue", registry=self.registry
        )
        self.pii_entities = Counter(
            "mgw_pii_entities_total",
            "identifying values privacy mode replaced before they reached a remote, by type",
            ["type"],
            registry=self.registry,
        )
        self.running = Gauge(
            "mgw_tasks_running", "tasks running in this process", registry=self.registry
        )

    def task_finished(self, protocol: str, status: str, seconds: float | None) -> None:
        self.tasks.labels(protocol, status).inc()
        if seconds is not None:
            self.task_seconds.labels(protocol).observe(seconds)

    def usage(
        self,
        protocol: str,
        local: tuple[int, int],
        remote: tuple[int, int],
        cost_usd: float,
    ) -> None:
        for side, (prompt, completion) in (("local", local), ("remote", remote)):
            if prompt:
                self.tokens.labels(side, "prompt").inc(prompt)
            if completion:
                self.tokens.labels(side, "completion").inc(completion)
        if cost_usd:
            self.cost.labels(protocol).inc(cost_usd)

    def result(self, result: Result) -> None:
        usage = result.usage
        self.usage(
            result.protocol,
            (usage.local.prompt_tokens, usage.local.completion_tokens),
            (usage.remote.prompt_tokens, usage.remote.completion_tokens),
            result.cost_usd.remote,
        )

    def pii_crossed(self, entity: str) -> None:
        """A value's placeholder crossed to the remote for the first time in its task."""
        self.pii_entities.labels(entity).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
