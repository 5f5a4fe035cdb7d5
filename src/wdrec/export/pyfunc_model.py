"""The MLflow pyfunc model, logged as code (MLflow "models from code"): no pickle.

MLflow copies this file into the model and runs it on load; ``set_model`` names the
model object. The bundle travels as the model's ``bundle`` artifact, the ``wdrec`` package
as its code (``code_paths``), so loading needs only the model's pinned requirements, not
this checkout. Keep this module's imports (and those of bundle, scorer, features and
widedeep) free of Lightning and the training code: the requirements do not list them.

``predict`` takes a DataFrame with string columns ``user_id`` and ``item_id`` and returns
one probability (or rating, for a regression model) per row, in order.

With ``params={"similar_k": K}`` (K >= 1) it returns similar items instead
(wdrec/export/similar.py): the input needs only ``item_id`` (``user_id`` is ignored), and the
output is a DataFrame with one row per (item, neighbour): ``item_id``, ``similar_item_id``,
``score`` (the similarity) and ``rank`` (1 = most similar), K rows per input row, in input order;
an item never lists itself. An item id not in the catalogue is a ``ValueError`` naming it. The
logged signature must declare the parameter (:func:`signature`), or MLflow drops it.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from wdrec.export.bundle import read_bundle
from wdrec.export.scorer import Scorer, UnknownItemsError
from wdrec.export.similar import SimilarItems

SIMILAR_K = "similar_k"  # the parameter that asks for similar items


def signature() -> ModelSignature:
    """What the model takes: ``user_id`` (optional: similar items need none) and ``item_id``
    strings, and the ``similar_k`` parameter (0: score the pairs); returns the scores."""
    inputs = Schema([ColSpec("string", "user_id", required=False), ColSpec("string", "item_id")])
    return ModelSignature(inputs, Schema([ColSpec("float")]), ParamSchema([ParamSpec(SIMILAR_K, "long", 0)]))


class WideDeepPyfunc(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        self.scorer = Scorer(read_bundle(context.artifacts["bundle"]))
        self.similar: SimilarItems | None = None  # built on the first similar_k request

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.Series | pd.DataFrame:
        similar_k = int((params or {}).get(SIMILAR_K) or 0)
        if similar_k:
            return self.similar_items(model_input, similar_k)
        missing = {"user_id", "item_id"} - set(model_input.columns)
        if missing:
            raise ValueError(f"input needs columns user_id and item_id; missing {sorted(missing)}")
        scores = self.scorer.score_pairs(model_input["user_id"].astype(str).tolist(), model_input["item_id"].astype(str).tolist())
        return pd.Series(scores, index=model_input.index, name="score")

    def similar_items(self, model_input: pd.DataFrame, k: int) -> pd.DataFrame:
        """The ``k`` items most similar to each ``item_id`` of ``model_input``, in long form."""
        if "item_id" not in model_input.columns:
            raise ValueError("similar items need an item_id column")
        if k < 0:
            raise ValueError(f"{SIMILAR_K} must be >= 0, got {k}")
        ids = model_input["item_id"].astype(str).tolist()
        try:
            rows = self.scorer.item_rows(ids).tolist()
        except UnknownItemsError as error:
            raise ValueError(str(error)) from None
        self.similar = self.similar or SimilarItems(self.scorer)
        out: dict[str, list] = {"item_id": [], "similar_item_id": [], "score": [], "rank": []}
        for item_id, row in zip(ids, rows, strict=True):
            found, scores = self.similar.of(row, k)
            out["item_id"] += [item_id] * len(found)
            out["similar_item_id"] += self.scorer.item_ids[found].tolist()
            out["score"] += scores
            out["rank"] += list(range(1, len(found) + 1))
        return pd.DataFrame(out)


mlflow.models.set_model(WideDeepPyfunc())
