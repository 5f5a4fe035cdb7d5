"""The MLflow pyfunc model, logged as code (MLflow "models from code"): no pickle.

MLflow copies this file into the model and runs it on load; ``set_model`` names the
model object. The bundle travels as the model's ``bundle`` artifact, the ``wdrec`` package
as its code (``code_paths``), so loading needs only the model's pinned requirements, not
this checkout. Keep this module's imports (and those of bundle, scorer, features and
widedeep) free of Lightning and the training code: the requirements do not list them.

``predict`` takes a DataFrame with string columns ``user_id`` and ``item_id`` and returns
one probability (or rating, for a regression model) per row, in order.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from wdrec.export.bundle import read_bundle
from wdrec.export.scorer import Scorer


class WideDeepPyfunc(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        self.scorer = Scorer(read_bundle(context.artifacts["bundle"]))

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.Series:
        missing = {"user_id", "item_id"} - set(model_input.columns)
        if missing:
            raise ValueError(f"input needs columns user_id and item_id; missing {sorted(missing)}")
        scores = self.scorer.score_pairs(model_input["user_id"].astype(str).tolist(), model_input["item_id"].astype(str).tolist())
        return pd.Series(scores, index=model_input.index, name="score")


mlflow.models.set_model(WideDeepPyfunc())
