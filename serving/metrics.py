"""Prometheus metrics, in a registry of the app's own (several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.model_store import ModelStore

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, store: ModelStore) -> None:
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
        self.registry.register(_ModelCollector(store))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)


class _ModelCollector(Collector):
    """The served model and the reload counters, read from the store at scrape time."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        current = self.store.current
        info = InfoMetricFamily("wdrec_model", "The model being served", labels=["name", "version", "run_id"])
        loaded = GaugeMetricFamily("wdrec_model_loaded", "1 when a model is loaded, else 0")
        loaded.add_metric([], 0.0 if current is None else 1.0)
        if current is not None:
            i = current.info
            info.add_metric([i.name, i.version or "", i.run_id or ""], {"task": i.task, "num_items": str(i.num_items)})
        yield info
        yield loaded
        yield CounterMetricFamily("wdrec_model_reloads", "Successful model reloads", value=self.store.reloads)
        yield CounterMetricFamily("wdrec_model_reload_failures", "Failed model loads (old model kept)", value=self.store.failures)
