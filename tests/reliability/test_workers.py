"""Several workers (``wdrec-serve --workers N``): a reload reaches every worker; /metrics counts for all.

Real ``wdrec-serve`` processes on loopback. Version 1 (``bundle_a``) and version 2 (``bundle_b``,
perturbed weights) answer differently, so each /v1/recommend answer is checked against the
reference answer of the version it names, computed beforehand in this process by the code the
server runs: an answer that mixed the two models would match neither.

The contract (docs/architecture.md, "Several workers"): ``POST /admin/reload`` answers 200 only
once every live worker serves the new model, so no request sent after that answer gets the old
one; while it runs, each answer comes whole from one version. Clients here open a connection per
request, so that the kernel spreads the requests over the workers (the log names each worker).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from servers import Server, running_server, serve_env

from serving import recommender
from serving.loader import load_model

ADMIN = {"Authorization": "Bearer cli-token"}  # servers.serve_env's token
USERS = ["1", "196", "500", "900", "cold-7"]  # known users and a cold start
K = 10
SCORE_TOLERANCE = 1e-6
FRESH = httpx.Limits(max_keepalive_connections=0)  # a connection per request: any worker may take it

Reference = tuple[list[str], list[float]]  # a recommendation's item ids and scores


@pytest.fixture(scope="module")
def references(bundle_a: Path, bundle_b: Path) -> dict[str, dict[str, Reference]]:
    """version -> user -> the top-K that version answers, computed as the server does (one torch thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = {"1": load_model(str(bundle_a)), "2": load_model(str(bundle_b))}
        answers = {version: {user: _top(recommender.recommend(model, user, K).items) for user in USERS} for version, model in models.items()}
    finally:
        torch.set_num_threads(threads)
    assert all(answers["1"][user] != answers["2"][user] for user in USERS), "the versions must answer differently"
    return answers


def _top(items: list[dict[str, Any]]) -> Reference:
    return [item["item_id"] for item in items], [item["score"] for item in items]


def mismatch(references: dict[str, dict[str, Reference]], user: str, body: dict[str, Any]) -> str | None:
    """None when ``body`` is exactly the answer of the version it names; else what differs."""
    version = body["model_version"]
    if version not in references:
        return f"unknown model_version {version!r}"
    (ids, scores), (expected_ids, expected_scores) = _top(body["items"]), references[version][user]
    if ids != expected_ids or any(abs(a - b) > SCORE_TOLERANCE for a, b in zip(scores, expected_scores, strict=True)):
        return f"user {user}, version {version}: {ids} {scores} is not that version's {expected_ids} {expected_scores}"
    return None


@dataclass
class Answer:
    sent: float  # time.monotonic() when the request was sent
    status: int  # 0: no HTTP answer
    version: str | None = None
    problem: str | None = None


class Load:
    """``threads`` clients sending /v1/recommend, a connection per request, from ``with`` to its end."""

    def __init__(self, url: str, references: dict[str, dict[str, Reference]], threads: int) -> None:
        self.url, self.references = url, references
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(index,)) for index in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60, limits=FRESH) as client:
            n = index
            while not self.stop.is_set():
                user = USERS[n % len(USERS)]
                n += 1
                answer = Answer(time.monotonic(), 0)
                try:
                    response = client.post("/v1/recommend", json={"user_id": user, "k": K})
                except httpx.HTTPError as error:
                    answer.problem = f"{type(error).__name__}: {error}"
                else:
                    answer.status = response.status_code
                    if response.status_code == 200:
                        answer.version = response.json()["model_version"]
                        answer.problem = mismatch(self.references, user, response.json())
                    else:
                        answer.problem = response.text[:300]
                self.answers.append(answer)

    def failures(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.status != 200 or answer.problem]


@dataclass
class Reloaded:
    sent: float
    answered: float
    status: int
    body: dict[str, Any]
    version: str  # what is served after it: the new version on 200, else the previous one


def reload(server: Server, bundle: Path, serving: str) -> Reloaded:
    sent = time.monotonic()
    response = httpx.post(f"{server.url}/admin/reload", json={"model": str(bundle)}, headers=ADMIN, timeout=300)
    body = response.json()
    return Reloaded(sent, time.monotonic(), response.status_code, body, body["new_version"] if response.status_code == 200 else serving)


def stale(answers: list[Answer], reloads: list[Reloaded], first: str) -> list[Answer]:
    """Answers from another version than the only one that may answer: before the first reload is
    sent, and from each reload's answer until the next is sent."""
    windows = [(float("-inf"), first)] + [(r.answered, r.version) for r in reloads]
    ends = [r.sent for r in reloads] + [float("inf")]
    return [a for a in answers for (start, version), end in zip(windows, ends, strict=True) if start <= a.sent < end and a.version != version]


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples called ``name`` in a Prometheus text exposition, by label set."""
    return {frozenset(s.labels.items()): s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name}


def workers(server: Server) -> dict[int, str]:
    """Each live worker that has loaded a model (pid -> version), from /metrics (any worker answers for all)."""
    text = httpx.get(f"{server.url}/metrics", timeout=60).text
    return {int(dict(labels)["worker"]): dict(labels)["version"] for labels in samples(text, "wdrec_model_info")}


def wait_for_workers(server: Server, count: int, version: str, gone: int | None = None, within: float = 240) -> dict[int, str]:
    """Wait until ``count`` workers serve ``version``, ``gone`` not among them; returns them."""
    deadline = time.monotonic() + within
    while (serving := workers(server)) != dict.fromkeys(serving, version) or len(serving) != count or gone in serving:
        assert time.monotonic() < deadline, f"not {count} workers on version {version} in {within:.0f} s: {serving}"
        time.sleep(0.5)
    return serving


def request_counts(server: Server, tries: int) -> dict[int, set[float]]:
    """/metrics scraped ``tries`` times on fresh connections: worker pid -> the /v1/recommend 200 counts it reported."""
    scrapes = {f"scrape-{time.monotonic_ns()}-{i}": 0.0 for i in range(tries)}
    labels = frozenset({"method": "POST", "route": "/v1/recommend", "status": "200"}.items())
    for request_id in scrapes:
        text = httpx.get(f"{server.url}/metrics", headers={"X-Request-ID": request_id}, timeout=60).text
        scrapes[request_id] = samples(text, "wdrec_http_requests_total").get(labels, 0.0)
    time.sleep(0.5)  # the access log line follows the response
    counts: dict[int, set[float]] = {}
    for request_id, pid in workers_of(server, set(scrapes)).items():
        counts.setdefault(pid, set()).add(scrapes[request_id])
    return counts


def workers_of(server: Server, request_ids: set[str]) -> dict[str, int]:
    """The worker (pid) that answered each of ``request_ids`` that the access log holds so far."""
    return {record["request_id"]: record["pid"] for record in server.records() if record.get("request_id") in request_ids}


def answers_by_worker(server: Server, path: str, pids: set[int], tries: int = 60) -> dict[int, list[dict[str, Any]]]:
    """GET ``path`` on fresh connections until every worker of ``pids`` has answered it (200 each):
    pid -> the bodies it sent (the access log names the worker of each request id)."""
    bodies: dict[str, dict[str, Any]] = {}
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for attempt in range(tries):
        request_id = f"route-{time.monotonic_ns()}-{attempt}"
        response = httpx.get(f"{server.url}{path}", headers={"X-Request-ID": request_id}, timeout=60)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        bodies[request_id] = response.json()
        if attempt % 4 == 3:
            time.sleep(0.2)  # the access log line follows the response
            by_pid = {}
            for request_id, pid in workers_of(server, set(bodies)).items():
                by_pid.setdefault(pid, []).append(bodies[request_id])
            if set(by_pid) == pids:
                return by_pid
    raise AssertionError(f"{path}: not every worker of {sorted(pids)} answered in {tries} requests: {sorted(by_pid)}")


def recommend_pids(server: Server) -> set[int]:
    """The workers that answered /v1/recommend (the access log names each)."""
    return {record["pid"] for record in server.records() if record.get("path") == "/v1/recommend"}


# --------------------------------------------------------------------- default suite
def test_two_workers_follow_a_reload_and_count_requests_together(bundle_a, bundle_b, references, tmp_path) -> None:  # noqa: ANN001
    """The issue: after /admin/reload answered 200, 5 of 8 answers still came from the old version."""
    scratch = tmp_path / "tmp"  # where wdrec-serve makes the workers' state directory
    scratch.mkdir()
    env = serve_env(f"sqlite:///{tmp_path / 'mlflow.db'}") | {"TMPDIR": str(scratch)}
    with running_server(["--model", str(bundle_a), "--workers", "2"], env, tmp_path) as server:
        before = wait_for_workers(server, 2, "1")
        (state,) = scratch.iterdir()
        with Load(server.url, references, threads=2) as load:
            time.sleep(1.0)
            reloaded = reload(server, bundle_b, "1")
            time.sleep(1.5)
        assert reloaded.status == 200, reloaded.body
        body = reloaded.body
        assert (body["old_version"], body["new_version"], body["generation"]) == ("1", "2", 1)
        assert {(w["pid"], w["version"], w["generation"]) for w in body["workers"]} == {(pid, "2", 1) for pid in before}
        assert not load.failures(), load.failures()[:5]
        assert not stale(load.answers, [reloaded], "1"), stale(load.answers, [reloaded], "1")[:5]
        assert any(a.version == "2" for a in load.answers) and recommend_pids(server) == set(before)
        assert {path.name for path in (state / "metrics").iterdir()} >= {f"counter_{pid}.db" for pid in before}
        # The routes beside /v1/recommend follow the reload on every worker too, each answering as the others.
        similar = answers_by_worker(server, "/v1/items/50/similar?k=10", set(before))
        assert {body["model_version"] for bodies in similar.values() for body in bodies} == {"2"}, similar
        assert len({str(body["items"]) for bodies in similar.values() for body in bodies}) == 1, similar
        users = answers_by_worker(server, "/v1/users?prefix=19&limit=5", set(before))
        assert len({str(body) for bodies in users.values() for body in bodies}) == 1, users
        assert all(u.startswith("19") for u in next(iter(users.values()))[0]["users"]), users
        counts = request_counts(server, tries=30)
    assert set(counts) == set(before), counts  # both workers answered scrapes, each counting every request
    assert all(c == {float(len(load.answers))} for c in counts.values()), (len(load.answers), counts)
    assert not state.exists()  # removed at exit


# ------------------------------------------------------------------------ slow suite
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("count", [2, 4])
def test_reloads_under_load_reach_every_worker(count: int, bundle_a, bundle_b, corrupted_bundle, references, tmp_path, report) -> None:  # noqa: ANN001
    """Reloads back and forth (one refused) under load: no failed request, no mixed answer, and no
    answer from the previous version once a reload has answered."""
    plan = [bundle_b, bundle_a, corrupted_bundle, bundle_b, bundle_a, bundle_b]
    args = ["--model", str(bundle_a), "--workers", str(count)]
    with running_server(args, serve_env(f"sqlite:///{tmp_path / 'mlflow.db'}"), tmp_path, ready_within=300) as server:
        pids = set(wait_for_workers(server, count, "1"))
        reloads: list[Reloaded] = []
        with Load(server.url, references, threads=2 * count) as load:
            for bundle in plan:
                time.sleep(2.0)
                reloads.append(reload(server, bundle, reloads[-1].version if reloads else "1"))
            time.sleep(2.0)
        served_by = recommend_pids(server)
        counts = request_counts(server, tries=4 * count)
    versions = Counter(answer.version for answer in load.answers)
    report(f"workers_{count}_reload_under_load", requests=len(load.answers), failures=len(load.failures()),
           responses_by_version=dict(versions), reload_seconds=[round(r.answered - r.sent, 2) for r in reloads],
           reload_statuses=[r.status for r in reloads])  # fmt: skip
    assert [r.status for r in reloads] == [200, 200, 409, 200, 200, 200], [r.body for r in reloads]
    refused = reloads[2].body["detail"]
    assert "weights.safetensors" in refused and "still serving version 1" in refused, refused
    for r in reloads:
        if r.status == 200:
            assert {(w["pid"], w["version"]) for w in r.body["workers"]} == {(pid, r.version) for pid in pids}, r.body
    assert not load.failures(), load.failures()[:5]
    assert not stale(load.answers, reloads, "1"), stale(load.answers, reloads, "1")[:5]
    assert versions["1"] and versions["2"] and served_by == pids, (versions, served_by)
    assert all(c == {float(len(load.answers))} for c in counts.values()), (len(load.answers), counts)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_lagging_worker_is_named_and_a_replaced_one_loads_the_published_model(bundle_a, bundle_b, tmp_path) -> None:  # noqa: ANN001
    """A stopped worker: the reload answers 504 naming it, and it catches up once it runs again. A
    killed worker: uvicorn's replacement serves the published version 2, not the start URI's 1."""
    env = serve_env(f"sqlite:///{tmp_path / 'mlflow.db'}", reload_timeout="0.5")  # uvicorn kills a worker silent for 5 s
    with running_server(["--model", str(bundle_a), "--workers", "2"], env, tmp_path) as server:
        before = wait_for_workers(server, 2, "1")
        stopped = min(before)
        os.kill(stopped, signal.SIGSTOP)
        try:
            lagging = reload(server, bundle_b, "1")
        finally:
            os.kill(stopped, signal.SIGCONT)
        assert lagging.status == 504, lagging.body
        assert lagging.body["lagging"] == [{"pid": stopped, "generation": 0, "version": "1", "error": None}], lagging.body
        assert f"pid {stopped} serves version 1" in lagging.body["detail"] and lagging.body["new_version"] == "2"
        wait_for_workers(server, 2, "2", within=60)
        os.kill(stopped, signal.SIGKILL)
        replaced = wait_for_workers(server, 2, "2", gone=stopped)
        with httpx.Client(base_url=server.url, timeout=60, limits=FRESH) as client:
            assert {client.get("/v1/model").json()["version"] for _ in range(20)} == {"2"}
    (new,) = set(replaced) - set(before)
    loads = [(r["model_version"], r["source"]) for r in server.records() if r.get("event") == "model_loaded" and r["pid"] == new]
    assert loads == [("2", str(bundle_b))], loads  # the published model, never the start URI's version 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_alias_polling_moves_every_worker_with_one_publication(trained_run, tmp_path, report) -> None:  # noqa: ANN001
    """WDREC_POLL_SECONDS with two workers: both pollers see the alias move, one publishes it, both serve it."""
    store = tmp_path / "mlflow.db"
    shutil.copy(trained_run.tracking_uri.removeprefix("sqlite:///"), store)
    uri = f"sqlite:///{store}"
    env = serve_env(uri, poll_seconds="0.5")
    with running_server(["--model", "models:/wdrec@champion", "--workers", "2"], env, tmp_path) as server:
        wait_for_workers(server, 2, "1")
        registry = MlflowClient(tracking_uri=uri)
        first = registry.get_model_version("wdrec", "1")
        second = registry.create_model_version("wdrec", first.source, run_id=first.run_id)
        moved = time.monotonic()
        registry.set_registered_model_alias("wdrec", "champion", second.version)
        wait_for_workers(server, 2, str(second.version), within=120)
        seconds = time.monotonic() - moved
        text = httpx.get(f"{server.url}/metrics", timeout=60).text
        model = httpx.get(f"{server.url}/v1/model", timeout=60).json()
    report("workers_alias_poll", workers=2, poll_seconds=0.5, seconds_to_every_worker=round(seconds, 2))
    assert samples(text, "wdrec_model_target_generation") == {frozenset(): 1.0}, text  # published once, not per worker
    assert model["source"] == "models:/wdrec@champion"
    published = [r for r in server.records() if r.get("event") == "model_published"]
    assert [(r["generation"], r["pinned"]) for r in published] == [(1, f"models:/wdrec/{second.version}")], published
