"""Settings: environment variables with the ``WDREC_`` prefix (``WDREC_MODEL``, ``WDREC_PORT``, ...).

``wdrec-serve`` flags override the environment by writing it, so every uvicorn worker
builds the same settings from the same place.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WDREC_", extra="ignore")

    model: str | None = Field(None, description="bundle directory, models:/name@alias or models:/name/N")
    host: str = "127.0.0.1"  # loopback unless asked otherwise
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    # Idle keep-alive connections are closed after this. Longer than the idle timeout of the client or load
    # balancer in front (60 s on common ones): a server that closes first races a request on the same
    # connection, which the client sees as a reset (uvicorn's own 5 s lost one request in 15,000 under load).
    keep_alive_seconds: int = Field(75, ge=1)
    admin_token: SecretStr | None = None  # WDREC_ADMIN_TOKEN; unset: /admin/* answers 403
    max_body_bytes: int = Field(1 << 20, ge=1)
    max_k: int = Field(1000, ge=1)
    max_ids: int = Field(10_000, ge=1)  # candidates, item_ids, exclude_items
    poll_seconds: float = Field(0.0, ge=0)  # re-resolve a models:/name@alias URI this often; 0 = never
    # Several workers (serving/cluster.py): wdrec-serve sets state_dir; each worker reads the published model
    # every sync_seconds, and /admin/reload waits up to reload_timeout for every worker to serve the new one.
    state_dir: Path | None = None
    sync_seconds: float = Field(0.25, gt=0)
    reload_timeout: float = Field(60.0, gt=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    torch_threads: int = Field(1, ge=1)  # 1: on small shared machines more threads only wait on each other
    score_threads: int = Field(1, ge=1)  # scoring calls running at once (worker threads; see routers/recommendations.py)
    # A model whose recommendation takes less than this (ModelInfo.request_ms) is scored on the event loop: no thread hop
    inline_score_ms: float = Field(5.0, ge=0)
    # serving/precomputed.py once it matches the network's forward at load; "require": refuse a model where it does not
    fast_path: bool | Literal["require"] = True
    # "two_stage": rank only `candidates` items from serving.retrieval per request (catalogues too large to score whole)
    retrieval: Literal["full", "two_stage"] = "full"
    candidates: int = Field(300, ge=1)

    @property
    def two_stage_candidates(self) -> int | None:
        return self.candidates if self.retrieval == "two_stage" else None


@lru_cache
def get_settings() -> Settings:
    return Settings()

