"""The click model: an MLP over frozen ALS user/item vectors plus context, and its safe persistence.

Its input features are ``features.py``'s (``encode``). The ALS vectors are inputs, not
parameters: the network's ``state_dict`` holds the MLP and its feature standardization, and
the vectors travel as parquet.

A model directory holds ``weights.pt`` (a ``state_dict``: tensors only), ``config.json``,
``user_factors.parquet`` and ``item_factors.parquet``. Loading uses
``torch.load(weights_only=True)``: nothing is ever unpickled. In MLflow the directory travels
inside a ``pyfunc`` model logged from code (``pyfunc.py``), as its artifact ``model_dir``;
``resolve_model_dir`` finds it in a downloaded MLflow model (and accepts a bare directory, as
older versions were registered).
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from mltrain_assets.artifacts import arrow_buffer, filesystem, normalize_uri
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.contract import ITEM_FACTORS_FILE, USER_FACTORS_FILE
from mltrain_assets.pipelines.recsys.workloads.features import (
    DEVICES,
    FEATURE_VERSION,
    SCORE_CHUNK,
    EncodedRows,
    FactorTable,
    encode,
    encode_rows,
    feature_dim,
    global_click_rate,
)

WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"
MODEL_FILES = (WEIGHTS_FILE, CONFIG_FILE, USER_FACTORS_FILE, ITEM_FACTORS_FILE)
# The MLflow pyfunc model: its artifact holding the model directory, its input and output columns.
MODEL_DIR_ARTIFACT = "model_dir"
INPUT_COLUMNS = ("user_id", "item_id", "device", "position", "hour")
OUTPUT_COLUMN = "click_probability"
MLMODEL_FILE = "MLmodel"


def default_config(rank: int, **overrides: Any) -> dict[str, Any]:
    config = {
        "feature_version": FEATURE_VERSION,
        "rank": rank,
        "hidden_sizes": list(contract.HIDDEN_SIZES),
        "max_position": contract.MAX_POSITION,
        "devices": list(DEVICES),
    }
    config.update(overrides)
    return config


class RecsysNet(nn.Module):
    """MLP click model: standardized features -> logit.

    The standardization (``feature_mean``/``feature_std``) is a pair of buffers, so it is part of
    the ``state_dict`` and of every checkpoint. ``init_output`` starts the network as the constant
    base-rate predictor: no feature-dependent trend is imprinted while the output calibrates,
    which keeps a model trained on shuffled labels at AUC ~0.5 instead of a spurious ranking.
    """

    def __init__(
        self,
        rank: int,
        hidden_sizes: tuple[int, ...] | list[int] = contract.HIDDEN_SIZES,
        max_position: int = contract.MAX_POSITION,
    ):
        super().__init__()
        width = feature_dim(rank, max_position)
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_std", torch.ones(width))
        layers: list[nn.Module] = []
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RecsysNet:
        return cls(int(config["rank"]), tuple(config["hidden_sizes"]), int(config["max_position"]))

    @torch.no_grad()
    def init_output(self, base_rate: float) -> None:
        base_rate = min(max(base_rate, 1e-4), 1 - 1e-4)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.constant_(self.mlp[-1].bias, float(np.log(base_rate / (1 - base_rate))))

    @torch.no_grad()
    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean.copy_(mean.to(self.feature_mean))
        self.feature_std.copy_(std.clamp_min(1e-3).to(self.feature_std))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp((features - self.feature_mean) / self.feature_std).squeeze(-1)


@dataclass
class ModelBundle:
    """A loaded model directory: the network (eval mode), its config and its frozen vectors."""

    model: RecsysNet
    config: dict[str, Any]
    users: FactorTable
    items: FactorTable


def make_bundle(
    model: RecsysNet, config: Mapping[str, Any], user_factors: pa.Table, item_factors: pa.Table
) -> ModelBundle:
    ctr = float(config.get("global_ctr", global_click_rate(item_factors)))
    model.eval()
    return ModelBundle(
        model,
        dict(config),
        FactorTable.from_arrow(user_factors, "user_id", ctr),
        FactorTable.from_arrow(item_factors, "item_id", ctr),
    )


def _model_fs(model_dir: str):
    return filesystem(normalize_uri(model_dir))


def save_model_dir(
    model_dir: str, model: RecsysNet, config: Mapping[str, Any], user_factors: pa.Table, item_factors: pa.Table
) -> list[str]:
    """Write the four model files into ``model_dir`` (a local path or an fsspec URI); returns their names."""
    fs, root = _model_fs(model_dir)
    fs.makedirs(root, exist_ok=True)
    config = dict(config)
    config.setdefault("global_ctr", global_click_rate(item_factors))
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    fs.pipe_file(posixpath.join(root, WEIGHTS_FILE), buffer.getvalue())
    fs.pipe_file(posixpath.join(root, CONFIG_FILE), json.dumps(config, indent=2, sort_keys=True).encode())
    for name, table in ((USER_FACTORS_FILE, user_factors), (ITEM_FACTORS_FILE, item_factors)):
        sink = io.BytesIO()
        pq.write_table(
            table.select([table.column_names[0], "factors", "impressions", "clicks"]), sink, compression="zstd"
        )
        fs.pipe_file(posixpath.join(root, name), sink.getvalue())
    return list(MODEL_FILES)


def load_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """Tensors only: ``weights_only=True`` refuses anything that is not plain data."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_model_dir(model_dir: str) -> ModelBundle:
    """Load a model directory written by ``save_model_dir`` (local path or fsspec URI)."""
    fs, root = _model_fs(model_dir)
    missing = [name for name in MODEL_FILES if not fs.exists(posixpath.join(root, name))]
    if missing:
        raise FileNotFoundError(f"{model_dir} is not a recommender model directory: missing {missing}")
    config = json.loads(fs.cat_file(posixpath.join(root, CONFIG_FILE)))
    if config.get("feature_version") != FEATURE_VERSION:
        raise ValueError(f"{model_dir}: feature_version {config.get('feature_version')} != {FEATURE_VERSION}")
    model = RecsysNet.from_config(config)
    model.load_state_dict(load_state_dict(fs.cat_file(posixpath.join(root, WEIGHTS_FILE))))
    tables = {}
    for name in (USER_FACTORS_FILE, ITEM_FACTORS_FILE):
        # An Arrow-owned copy: see ``artifacts.arrow_buffer`` (a model folder has no manifest to check).
        tables[name] = pq.read_table(pa.BufferReader(arrow_buffer(fs.cat_file(posixpath.join(root, name)))))
    return make_bundle(model, config, tables[USER_FACTORS_FILE], tables[ITEM_FACTORS_FILE])


def resolve_model_dir(local_path: str) -> str:
    """The model directory inside a downloaded MLflow model (``MLmodel`` + artifacts), or ``local_path`` itself.

    A bare model directory (versions registered before the pyfunc model) is returned as is. A
    version whose source is ``runs:/<run>/model`` naming a *logged* model downloads, in MLflow 3,
    into a ``model/`` folder under the destination: the one sub-folder holding ``MLmodel`` is used.
    """
    if not os.path.exists(os.path.join(local_path, MLMODEL_FILE)):
        if all(os.path.exists(os.path.join(local_path, name)) for name in MODEL_FILES) or not os.path.isdir(local_path):
            return local_path
        nested = [
            os.path.join(local_path, child)
            for child in sorted(os.listdir(local_path))
            if os.path.exists(os.path.join(local_path, child, MLMODEL_FILE))
        ]
        if len(nested) != 1:
            return local_path  # load_model_dir names what is missing
        local_path = nested[0]
    from mlflow.models import Model

    flavor = Model.load(os.path.join(local_path, MLMODEL_FILE)).flavors.get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get(MODEL_DIR_ARTIFACT)
    if not artifact:
        raise FileNotFoundError(f"{local_path}: an MLflow model without the {MODEL_DIR_ARTIFACT!r} artifact")
    return os.path.join(local_path, artifact["path"])


def example_input(bundle: ModelBundle, rows: int = 5) -> pd.DataFrame:
    """A few impressions in the pyfunc model's input schema (known users and items, typical context)."""
    n = max(1, rows)
    users = bundle.users.ids[:n] if len(bundle.users.ids) else np.zeros(n, np.int64)
    items = bundle.items.ids[:n] if len(bundle.items.ids) else np.zeros(n, np.int64)
    n = min(n, len(users), len(items))
    return pd.DataFrame(
        {
            "user_id": np.asarray(users[:n], dtype=np.int64),
            "item_id": np.asarray(items[:n], dtype=np.int64),
            "device": [DEVICES[i % len(DEVICES)] for i in range(n)],
            "position": np.arange(n, dtype=np.int64),
            "hour": np.linspace(8.0, 20.0, n, dtype=np.float64),
        },
        columns=list(INPUT_COLUMNS),
    )


@torch.no_grad()
def score_rows(bundle: ModelBundle, rows: EncodedRows, chunk: int = SCORE_CHUNK) -> np.ndarray:
    bundle.model.eval()
    max_position = int(bundle.config["max_position"])
    out = np.empty(len(rows), np.float32)
    for start in range(0, len(rows), chunk):
        part = rows.slice(start, start + chunk)
        logits = bundle.model(encode(part, bundle.users, bundle.items, max_position))
        out[start : start + len(part)] = torch.sigmoid(logits).numpy()
    return out


def score(bundle: ModelBundle, interactions: pd.DataFrame | pa.Table, chunk: int = SCORE_CHUNK) -> np.ndarray:
    """Click probabilities for impressions (user_id, item_id, device, position, event_at|hour), pandas or Arrow.

    Unknown users/items get a zero vector and the global click rate (cold start): the
    network then ranks them by context and, for known items, by popularity.
    """
    rows = encode_rows(interactions, bundle.users, bundle.items, int(bundle.config["max_position"]))
    return score_rows(bundle, rows, chunk)
