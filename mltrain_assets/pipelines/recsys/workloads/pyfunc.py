"""The recommender as an MLflow ``pyfunc`` model, logged from code (MLflow "models from code").

``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model_dir": <model directory>})``
stores this file's source, never a pickled object; loading runs it, and ``load_context`` reads
the model directory with ``load_model_dir`` (``torch.load(weights_only=True)``).

Input: one row per impression, columns ``INPUT_COLUMNS`` (``user_id``, ``item_id``, ``device``,
``position``, ``hour``); output: ``click_probability`` per row. Unknown users and items are scored
as cold starts.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from mltrain_assets.pipelines.recsys.workloads.model import MODEL_DIR_ARTIFACT, OUTPUT_COLUMN, load_model_dir, score


class RecommenderModel(PythonModel):
    """Click probabilities from the saved model directory (weights, config, ALS vectors)."""

    def load_context(self, context) -> None:
        self.bundle = load_model_dir(context.artifacts[MODEL_DIR_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        scores = score(self.bundle, model_input)
        return pd.DataFrame({OUTPUT_COLUMN: scores.astype(np.float64)})


mlflow.models.set_model(RecommenderModel())
