"""The model being served, swapped whole on a reload without dropping a request.

:class:`ModelStore` holds the current :class:`~serving.served_model.ServedModel`. A reload
has the loader build and probe the new model *beside* the old one (serving/loader.py), and
only then swaps the reference, which is one atomic assignment. Each request takes
``store.current`` once, at its start, and keeps that object to the end, so requests in
flight finish on the model they began with. A failed load leaves the old model in place
and reports why. A lock keeps two reloads from interleaving.
"""

from __future__ import annotations

import logging
import threading
from typing import TypeGuard

from serving.loader import FastPath, ModelLoadError, load_model
from serving.served_model import ServedModel
from wdrec.tracking_store import resolve_tracking_uri

log = logging.getLogger("wdrec.serving")


def is_alias(uri: str | None) -> TypeGuard[str]:
    """Whether ``uri`` is a ``models:/name@alias`` URI, whose version can move."""
    return uri is not None and uri.startswith("models:/") and "@" in uri


class ModelStore:
    """The current :class:`ServedModel`, swapped atomically by :meth:`load`.

    Args:
        uri: what to load at start and on a reload that names no model.
        fast_path: serve with the precomputed scorer once verified at each load; "require":
            refuse a model whose precomputed scorer differs from the network's forward.
        candidates: two-stage retrieval with this many candidates; None scores the whole catalogue.
    """

    def __init__(self, uri: str | None, fast_path: FastPath = True, candidates: int | None = None) -> None:
        self.uri = uri
        self.fast_path, self.candidates = fast_path, candidates
        self.current: ServedModel | None = None
        self.reloads = 0  # successful loads after the first
        self.failures = 0  # failed loads, the first included
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def load(self, uri: str | None = None, source: str | None = None) -> tuple[ServedModel | None, ServedModel]:
        """Load ``uri`` (default: the store's), probe it and make it current; returns (old, new).

        ``source``: what ``ModelInfo.source`` reports instead of ``uri`` (a worker loading the
        pinned ``models:/name/N`` of a published ``models:/name@alias`` reports the alias, as
        the worker that published it does). Blocking: call it from a worker thread. On failure
        the current model stays.
        """
        uri = uri or self.uri
        if not uri:
            raise ModelLoadError("no model to load: give a bundle path or a models:/ URI")
        with self._lock:
            old = self.current
            try:
                new = load_model(uri, self.fast_path, self.candidates, source)
            except ModelLoadError as error:
                self.failures += 1
                self.last_error = str(error)
                raise
            self.current = new  # the swap: requests that already hold `old` keep it
            if old is not None:
                self.reloads += 1
            self.last_error = None
        log.info(
            "model loaded",
            extra={"event": "model_loaded", "model": new.info.name, "model_version": new.info.version,
                   "source": uri, "previous_version": None if old is None else old.info.version,
                   "fast_path": new.info.fast_path, "retrieval": new.info.retrieval},
        )  # fmt: skip
        return old, new

    def registry_version(self) -> str | None:
        """The version a ``models:/name@alias`` URI points at now (for polling); None otherwise."""
        if not is_alias(self.uri):
            return None
        from mlflow import MlflowClient

        name, _, alias = self.uri.removeprefix("models:/").partition("@")
        return str(MlflowClient(tracking_uri=resolve_tracking_uri()).get_model_version_by_alias(name, alias).version)
