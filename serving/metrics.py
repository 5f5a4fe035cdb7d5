"""Prometheus metrics, in a registry of the app's own (several apps can live in one process).

With several workers (a :class:`~serving.cluster.Cluster`) every worker answers /metrics for
all: request counters and latencies are prometheus-client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, set by ``wdrec-serve``) summed over the workers, and the
model series come from each live worker's recorded state, labelled with its pid (``worker``).
They are not multiprocess gauges because those keep every label set ever written (a
version's series would outlive the version: removing labels is not implemented there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from serving.cluster import Cluster, WorkerState
from serving.model_store import ModelStore

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, store: ModelStore, cluster: Cluster | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "wdrec_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "wdrec_http_request_duration_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        if cluster is None:
            self.exposed = self.registry
            self.exposed.register(_ModelCollector(lambda: [WorkerState.of(store)]))
        else:  # every worker's requests, read from the multiprocess files
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed)
            self.exposed.register(_ModelCollector(cluster.workers, cluster))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.exposed)


class _ModelCollector(Collector):
    """The served model and the reload counters, read at scrape time: from the store (one process),
    or from every live worker's state, each labelled with its pid, beside the published generation."""

    def __init__(self, states: Callable[[], list[WorkerState]], cluster: Cluster | None = None) -> None:
        self.states, self.cluster = states, cluster

    def collect(self) -> Iterator[Metric]:
        labels = [] if self.cluster is None else ["worker"]
        info = InfoMetricFamily("wdrec_model", "The model being served", labels=[*labels, "name", "version", "run_id"])
        loaded = GaugeMetricFamily("wdrec_model_loaded", "1 when a model is loaded, else 0", labels=labels)
        reloads = CounterMetricFamily("wdrec_model_reloads", "Successful model reloads", labels=labels)
        failures = CounterMetricFamily("wdrec_model_reload_failures", "Failed model loads (old model kept)", labels=labels)
        states = self.states()
        for state in states:
            worker = [] if self.cluster is None else [str(state.pid)]
            loaded.add_metric(worker, 0.0 if state.name is None else 1.0)
            if state.name is not None:
                info.add_metric([*worker, state.name, state.version or "", state.run_id or ""],
                                {"task": state.task or "", "num_items": str(state.num_items)})  # fmt: skip
            reloads.add_metric(worker, state.reloads)
            failures.add_metric(worker, state.failures)
        yield from (info, loaded, reloads, failures)
        if self.cluster is not None:  # a worker whose generation is below the target's lags
            generation = GaugeMetricFamily("wdrec_model_generation", "The published model generation a worker serves", labels=labels)
            for state in states:
                generation.add_metric([str(state.pid)], state.generation)
            yield generation
            yield GaugeMetricFamily("wdrec_model_target_generation", "The published model generation the workers converge on",
                                    value=self.cluster.target().generation)  # fmt: skip
