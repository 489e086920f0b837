"""Batch inference: the top-K items for every known user from a registered recommender model.

``python -m mltrain_assets.workloads.recsys.recommend --params JSON`` (``RecommendParams``), e.g.
``model_uri`` ``models:/recommender/<version>``, ``top_k``, ``users_limit``. The model folder is
read from the version's pyfunc model (its ``model_dir`` artifact) or, for versions registered
before it, the raw folder (``evaluate.model_directory``), and loaded with ``load_model_dir``
(weights only); batch scoring skips pyfunc's per-row schema checks.

Candidates are every item the model knows, scored for every user the model knows in a
reference context (``device``, ``position``, ``hour``: the slot being filled), in
vectorized chunks of users. Output ``recommendations.parquet``: ``user_id, rank (1 = best),
item_id, score``; ties break towards the smaller item id, so reruns are identical.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from mltrain_assets.artifacts import ArtifactWriter
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main
from mltrain_assets.workloads.common.tracking import use_tracking
from mltrain_assets.workloads.recsys import contract
from mltrain_assets.workloads.recsys.evaluate import model_directory
from mltrain_assets.workloads.recsys.model import DEVICES, EncodedRows, ModelBundle, load_model_dir, score_rows
from mltrain_assets.workloads.recsys.params import RecommendParams

PRODUCER = "mltrain_assets.workloads.recommend"

RECOMMENDATIONS_FILE = "recommendations.parquet"
SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
)
ROWS_PER_CHUNK = 1_000_000


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` best scores per row, best first; exact ties go to the lower index."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recommend(
    bundle: ModelBundle,
    top_k_items: int = contract.TOP_K,
    users_limit: int | None = None,
    device: str = DEVICES[0],
    position: int = 0,
    hour: float = 20.0,
    rows_per_chunk: int = ROWS_PER_CHUNK,
    progress=None,
) -> pa.Table:
    """Top-``k`` items per known user as a ``SCHEMA`` table, sorted by (user_id, rank)."""
    user_ids, item_ids = bundle.users.ids, bundle.items.ids
    if users_limit is not None:
        user_ids = user_ids[:users_limit]
    n_items = len(item_ids)
    if len(user_ids) == 0 or n_items == 0:
        raise DataRejected(f"recommend: rule model_has_candidates failed: {len(user_ids)} users, {n_items} items")
    k = min(top_k_items, n_items)
    device_code = DEVICES.index(device) if device in DEVICES else -1
    position = min(position, int(bundle.config["max_position"]))
    users_per_chunk = max(1, rows_per_chunk // n_items)
    item_rows = torch.arange(1, n_items + 1, dtype=torch.int64)  # row 0 is the unknown-id row
    out_users, out_items, out_scores = [], [], []
    for start in range(0, len(user_ids), users_per_chunk):
        chunk = np.arange(start, min(start + users_per_chunk, len(user_ids)))
        user_rows = torch.from_numpy(bundle.users.rows(user_ids[chunk]))
        n = len(chunk) * n_items
        rows = EncodedRows(
            user_rows.repeat_interleave(n_items),
            item_rows.repeat(len(chunk)),
            torch.full((n,), device_code, dtype=torch.int64),
            torch.full((n,), position, dtype=torch.int64),
            torch.full((n,), float(hour), dtype=torch.float32),
        )
        scores = score_rows(bundle, rows).reshape(len(chunk), n_items)
        best = top_k(scores, k)
        out_users.append(np.repeat(user_ids[chunk], k))
        out_items.append(item_ids[best].reshape(-1))
        out_scores.append(np.take_along_axis(scores, best, axis=1).reshape(-1))
        if progress is not None:
            progress(int(chunk[-1]) + 1, len(user_ids))
    n_users = len(user_ids)
    return pa.table(
        {
            "user_id": pa.array(np.concatenate(out_users), pa.int64()),
            "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n_users)),
            "item_id": pa.array(np.concatenate(out_items), pa.int64()),
            "score": pa.array(np.concatenate(out_scores).astype(np.float32)),
        },
        schema=SCHEMA,
    )


def recommend_to(
    model_uri: str,
    out_uri: str,
    *,
    top_k_items: int = contract.TOP_K,
    users_limit: int | None = None,
    device: str = DEVICES[0],
    position: int = 0,
    hour: float = 20.0,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Score the model at ``model_uri`` and commit its top-``k`` per user into ``out_uri``; returns the summary."""
    started = time.monotonic()
    if device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with model_directory(model_uri) as model_dir:
        bundle = load_model_dir(model_dir)
    last_report = [0.0]

    def progress(done: int, total: int) -> None:
        if reporter is not None and (time.monotonic() - last_report[0] > 5 or done == total):
            last_report[0] = time.monotonic()
            reporter.progress(done, total, "users scored")

    table = recommend(bundle, top_k_items, users_limit, device, position, hour, progress=progress)
    writer = ArtifactWriter(
        out_uri, producer=PRODUCER, code_version=contract.RECOMMEND_CODE_VERSION, inputs={"model_uri": model_uri}
    )
    writer.write_table(RECOMMENDATIONS_FILE, table)
    users = table.num_rows // max(1, min(top_k_items, len(bundle.items.ids)))
    summary = {
        "users": users,
        "rows": table.num_rows,
        "top_k": top_k_items,
        "candidate_items": len(bundle.items.ids),
        "model_uri": model_uri,
        "context": {"device": device, "position": position, "hour": hour},
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    writer.commit(summary=summary)
    return summary


def run(params: RecommendParams, reporter: Reporter) -> dict[str, Any]:
    use_tracking(params.mlflow)  # models:/ URIs resolve against this store
    summary = recommend_to(
        params.model_uri,
        params.out_uri,
        top_k_items=params.top_k,
        users_limit=params.users_limit,
        device=params.device,
        position=params.position,
        hour=params.hour,
        reporter=reporter,
    )
    reporter.info(f"committed {params.out_uri}: {summary}")
    return summary


main = workload_main(RecommendParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
