"""Batch inference: the top-K items for every known user from a registered recommender model.

``python -m mltrain_assets.pipelines.recsys.workloads.recommend --params JSON`` (``RecommendParams``), e.g.
``model_uri`` ``models:/recommender/<version>``, ``top_k``, ``users_limit``. The model folder is
read from the version's pyfunc model (its ``model_dir`` artifact) or, for versions registered
before it, the raw folder (``evaluate.model_directory``), and loaded with ``load_model_dir``
(weights only); batch scoring skips pyfunc's per-row schema checks.

Items are scored for every user the model knows in a reference context (``device``,
``position``, ``hour``: the slot being filled), in one of two modes (the summary's ``mode``):

- ``exhaustive``, when the catalogue has at most ``RECOMMEND_CANDIDATES`` items (today's 1k):
  every item the model knows is scored for every user, in vectorized chunks of users.
- ``two_stage``, for larger catalogues, retrieval then ranking as production recommenders do.
  Retrieval gives each user ``RECOMMEND_CANDIDATES`` items: the ``RECOMMEND_POPULAR`` most
  clicked items of the window, plus the items with the largest ALS dot product ``u . v``
  (exact maximum inner product over the whole catalogue: a matrix multiply and ``torch.topk``
  per chunk of users, the score buffer bounded by ``RETRIEVAL_BUFFER_FLOATS``); a user without
  a vector (no positive rating in the window) gets the next most clicked items instead.
  Ranking: the MLP scores only those candidates (``CandidateScorer``, its first layer
  factorized per user) and the top K are kept.

Memory is the chunk buffers plus the output (users x K rows); time is linear in users. Output
``recommendations.parquet``: ``user_id, rank (1 = best), item_id, score``; ties break towards
the smaller item id, so reruns are identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from mltrain_assets.artifacts import ArtifactWriter
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.params import RecommendParams
from mltrain_assets.pipelines.recsys.workloads.evaluate import model_directory
from mltrain_assets.pipelines.recsys.workloads.features import DEVICES, EncodedRows, FactorTable, encode, feature_layout
from mltrain_assets.pipelines.recsys.workloads.model import ModelBundle, load_model_dir, score_rows
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main
from mltrain_assets.workloads.common.tracking import use_tracking

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
ROWS_PER_CHUNK = 1_000_000  # (user, item) pairs scored at once, exhaustive mode
# Two-stage mode works on small blocks of users: their buffers stay in the CPU's caches.
RETRIEVAL_BUFFER_FLOATS = 1 << 21  # users x items dot products held at once (8 MB)
CANDIDATE_PAIRS_PER_BATCH = 1 << 14  # (user, candidate) pairs through the network at once
EXHAUSTIVE = "exhaustive"
TWO_STAGE = "two_stage"

Progress = Callable[[int, int], None]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` best scores per row, best first; exact ties go to the lower index."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def top_k_probabilities(probabilities: torch.Tensor, k: int) -> torch.Tensor:
    """``top_k`` for probabilities (>= 0) by one ``torch.topk``: each is keyed by its float bits, then its column.

    A non-negative float32's bits, read as an integer, order like the float; the column in the
    low digits breaks exact ties towards the lower index, as the stable sort in ``top_k`` does.
    """
    n_columns = probabilities.shape[1]
    columns = torch.arange(n_columns - 1, -1, -1, dtype=torch.int64)
    keys = probabilities.contiguous().view(torch.int32).to(torch.int64) * n_columns + columns
    return torch.topk(keys, k, dim=1).indices


def retrieval_mode(n_items: int, candidates: int = contract.RECOMMEND_CANDIDATES) -> str:
    """``exhaustive`` when every item fits the candidate budget, else ``two_stage``."""
    return EXHAUSTIVE if n_items <= candidates else TWO_STAGE


def popularity_order(items: FactorTable) -> np.ndarray:
    """Item positions (into ``items.ids``) from most to least clicked in the window; ties: impressions, then id."""
    return np.lexsort((items.ids, -items.impressions, -items.clicks))


def retrieve_candidates(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    by_popularity: torch.Tensor,
    candidates: int,
    popular: int,
) -> torch.Tensor:
    """``(users, candidates)`` item positions per user, ascending: the ``popular`` first of ``by_popularity``
    and the best of the others by ``u . v`` (exact, over every item); zero-vector users get the next popular ones.

    ``user_vectors`` (users, rank) and ``item_vectors`` (items, rank) are ALS factors; the dot
    products of all users given are held at once: the caller bounds their number.
    """
    n_users, n_items = len(user_vectors), len(item_vectors)
    if not 0 <= popular < candidates <= n_items:
        raise ValueError(f"retrieval needs 0 <= popular ({popular}) < candidates ({candidates}) <= items ({n_items})")
    chosen = torch.empty((n_users, candidates), dtype=torch.int64)
    chosen[:, :popular] = by_popularity[:popular]
    warm = (user_vectors != 0).any(dim=1)
    chosen[~warm, popular:] = by_popularity[popular:candidates]
    if warm.any():
        dots = user_vectors[warm] @ item_vectors.T
        dots[:, by_popularity[:popular]] = float("-inf")  # already candidates
        chosen[warm, popular:] = torch.topk(dots, candidates - popular, dim=1, sorted=False).indices
    return chosen.sort(dim=1).values


class CandidateScorer:
    """The network's click probability for (user, candidate item) pairs in one context, first layer factorized.

    The first layer acts on standardized features, which are linear in the raw ones; every raw
    feature belongs to the user or the context, to the item (``v``, item stats), or to the pair
    (``u * v`` and ``u . v``, linear in ``v`` for a given user). So for user ``u`` the first
    layer is ``G_u @ [v, item stats] + b_u``: ``b_u`` is the layer on the features with the
    item's zeroed, and ``G_u`` folds the pair weights scaled by ``u`` into the item weights.
    A pair then costs a (rank + 3)-long dot per hidden unit instead of a 72-wide feature row;
    scores equal ``score_rows``'s up to float32 rounding.
    """

    def __init__(self, bundle: ModelBundle, device_code: int, position: int, hour: float):
        model = bundle.model
        self.users, self.items = bundle.users, bundle.items
        self.max_position = int(bundle.config["max_position"])
        self.context = (device_code, position, hour)
        layout = feature_layout(self.users.vectors.shape[1], self.max_position)
        self.first, self.rest = model.mlp[0], model.mlp[1:]
        self.mean, self.std = model.feature_mean, model.feature_std
        raw = self.first.weight / self.std  # (hidden, features): the first layer on raw features
        # u*v and u.v are both sums of u_j v_j: one weight per latent dimension.
        self.pair_weight = raw[:, layout["user_item_product"]] + raw[:, layout["user_item_dot"]]  # (hidden, rank)
        self.vector_weight = raw[:, layout["item_vector"]]  # (hidden, rank)
        self.stats_weight = raw[:, layout["item_stats"]]  # (hidden, 3)
        self.item_columns = [
            layout[name] for name in ("user_item_product", "user_item_dot", "item_vector", "item_stats")
        ]
        self.item_features = torch.cat([self.items.vectors, self.items.stats], dim=1)  # (items + 1, rank + 3)

    @torch.no_grad()
    def __call__(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(users, candidates)`` for ``user_rows`` (users,) and ``item_rows`` (users, candidates)."""
        n = len(user_rows)
        device_code, position, hour = self.context
        own = EncodedRows(
            user_rows.to(torch.int32),
            torch.zeros(n, dtype=torch.int32),
            torch.full((n,), device_code, dtype=torch.int8),
            torch.full((n,), position, dtype=torch.int8),
            torch.full((n,), hour, dtype=torch.float32),
        )
        user_side = encode(own, self.users, self.items, self.max_position)
        for columns in self.item_columns:
            user_side[:, columns] = 0.0
        bias = self.first((user_side - self.mean) / self.std)  # (users, hidden)
        u = self.users.vectors[user_rows].unsqueeze(1)  # (users, 1, rank)
        per_user = torch.cat(
            [self.pair_weight * u + self.vector_weight, self.stats_weight.expand(n, -1, -1)], dim=2
        )  # (users, hidden, rank + 3)
        x = torch.baddbmm(bias.unsqueeze(1), self.item_features[item_rows], per_user.transpose(1, 2))
        for layer in self.rest:  # in place where possible: the batch stays in cache
            x = x.relu_() if isinstance(layer, nn.ReLU) else layer(x)
        return x.squeeze(-1).sigmoid_()


def recommend(
    bundle: ModelBundle,
    top_k_items: int = contract.TOP_K,
    users_limit: int | None = None,
    device: str = DEVICES[0],
    position: int = 0,
    hour: float = 20.0,
    rows_per_chunk: int = ROWS_PER_CHUNK,
    progress: Progress | None = None,
    candidates: int = contract.RECOMMEND_CANDIDATES,
    popular: int = contract.RECOMMEND_POPULAR,
    mode: str | None = None,
) -> pa.Table:
    """Top-``k`` items per known user as a ``SCHEMA`` table, sorted by (user_id, rank).

    ``mode``: ``None`` picks it from the catalogue size (``retrieval_mode``, see the module doc);
    ``"two_stage"`` forces retrieval (e.g. to compare it with exhaustive scoring).
    """
    user_ids, item_ids = bundle.users.ids, bundle.items.ids
    if users_limit is not None:
        user_ids = user_ids[:users_limit]
    n_users, n_items = len(user_ids), len(item_ids)
    if n_users == 0 or n_items == 0:
        raise DataRejected(f"recommend: rule model_has_candidates failed: {n_users} users, {n_items} items")
    k = min(top_k_items, n_items)
    device_code = DEVICES.index(device) if device in DEVICES else -1
    position = min(position, int(bundle.config["max_position"]))
    out_items = np.empty((n_users, k), np.int64)
    out_scores = np.empty((n_users, k), np.float32)
    mode = mode or retrieval_mode(n_items, candidates)
    if mode not in (EXHAUSTIVE, TWO_STAGE):
        raise ValueError(f"mode must be {EXHAUSTIVE!r} or {TWO_STAGE!r}, got {mode!r}")
    if mode == TWO_STAGE and k > candidates:
        raise ValueError(f"top_k ({k}) exceeds the candidate budget ({candidates})")
    if mode == EXHAUSTIVE:
        _score_all_items(
            bundle, user_ids, k, device_code, position, hour, rows_per_chunk, out_items, out_scores, progress
        )
    else:
        _retrieve_and_rank(
            bundle, user_ids, k, CandidateScorer(bundle, device_code, position, hour), candidates, popular,
            out_items, out_scores, progress,
        )  # fmt: skip
    return pa.table(
        {
            "user_id": pa.array(np.repeat(user_ids, k), pa.int64()),
            "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n_users)),
            "item_id": pa.array(out_items.reshape(-1), pa.int64()),
            "score": pa.array(out_scores.reshape(-1)),
        },
        schema=SCHEMA,
    )


def _score_all_items(
    bundle: ModelBundle,
    user_ids: np.ndarray,
    k: int,
    device_code: int,
    position: int,
    hour: float,
    rows_per_chunk: int,
    out_items: np.ndarray,
    out_scores: np.ndarray,
    progress: Progress | None,
) -> None:
    """Exhaustive mode: every (user, item) pair through the network, chunks of users at a time."""
    item_ids = bundle.items.ids
    n_items = len(item_ids)
    users_per_chunk = max(1, rows_per_chunk // n_items)
    item_rows = torch.arange(1, n_items + 1, dtype=torch.int32)  # row 0 is the unknown-id row
    for start in range(0, len(user_ids), users_per_chunk):
        stop = min(start + users_per_chunk, len(user_ids))
        user_rows = torch.from_numpy(bundle.users.rows(user_ids[start:stop]))
        n = (stop - start) * n_items
        rows = EncodedRows(
            user_rows.repeat_interleave(n_items),
            item_rows.repeat(stop - start),
            torch.full((n,), device_code, dtype=torch.int8),
            torch.full((n,), position, dtype=torch.int8),
            torch.full((n,), float(hour), dtype=torch.float32),
        )
        scores = score_rows(bundle, rows).reshape(stop - start, n_items)
        best = top_k(scores, k)
        out_items[start:stop] = item_ids[best]
        out_scores[start:stop] = np.take_along_axis(scores, best, axis=1)
        if progress is not None:
            progress(stop, len(user_ids))


def _retrieve_and_rank(
    bundle: ModelBundle,
    user_ids: np.ndarray,
    k: int,
    scorer: CandidateScorer,
    candidates: int,
    popular: int,
    out_items: np.ndarray,
    out_scores: np.ndarray,
    progress: Progress | None,
) -> None:
    """Two-stage mode: candidates per chunk of users (bounded dot-product buffer), then the network on those only.

    Chunks run on ``torch.get_num_threads()`` Python threads, each op single-threaded (torch
    releases the GIL inside ops): the ops on a small chunk are too short for intra-op threads,
    whose barriers stall whenever another process holds a core (measured 4-8x slower on 2 busy
    cores). Every chunk is computed the same way whichever thread runs it, and writes its own
    rows of the output.
    """
    item_ids = bundle.items.ids
    item_vectors = bundle.items.vectors[1:]  # row 0 is the unknown-id row
    by_popularity = torch.from_numpy(popularity_order(bundle.items))
    users_per_chunk = max(1, RETRIEVAL_BUFFER_FLOATS // len(item_ids))
    users_per_batch = max(1, CANDIDATE_PAIRS_PER_BATCH // candidates)

    def rank_chunk(start: int) -> int:
        stop = min(start + users_per_chunk, len(user_ids))
        user_rows = torch.from_numpy(bundle.users.rows(user_ids[start:stop]).astype(np.int64))
        chosen = retrieve_candidates(bundle.users.vectors[user_rows], item_vectors, by_popularity, candidates, popular)
        for begin in range(0, len(chosen), users_per_batch):
            end = min(begin + users_per_batch, len(chosen))
            probabilities = scorer(user_rows[begin:end], chosen[begin:end] + 1)
            best = top_k_probabilities(probabilities, k)
            out_items[start + begin : start + end] = item_ids[torch.gather(chosen[begin:end], 1, best).numpy()]
            out_scores[start + begin : start + end] = torch.gather(probabilities, 1, best).numpy()
        return stop

    workers = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="recommend") as pool:
            for stop in pool.map(rank_chunk, range(0, len(user_ids), users_per_chunk)):
                if progress is not None:
                    progress(stop, len(user_ids))
    finally:
        torch.set_num_threads(workers)


def recommend_to(params: RecommendParams, reporter: Reporter | None = None) -> dict[str, Any]:
    """Score the model at ``model_uri`` and commit its top-``k`` per user into ``out_uri``; returns the summary."""
    started = time.monotonic()
    if params.device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {params.device!r}")
    with model_directory(params.model_uri) as model_dir:
        bundle = load_model_dir(model_dir)
    n_items = len(bundle.items.ids)
    mode = retrieval_mode(n_items)
    if reporter is not None:
        reporter.info(
            f"{mode}: {len(bundle.users.ids)} users x {n_items} items, {contract.RECOMMEND_CANDIDATES} candidates"
        )
    last_report = [0.0]

    def progress(done: int, total: int) -> None:
        if reporter is not None and (time.monotonic() - last_report[0] > 5 or done == total):
            last_report[0] = time.monotonic()
            reporter.progress(done, total, "users scored")

    table = recommend(
        bundle, params.top_k, params.users_limit, params.device, params.position, params.hour, progress=progress
    )
    writer = ArtifactWriter(
        params.out_uri,
        producer=PRODUCER,
        code_version=RecommendParams.code_version,
        inputs={"model_uri": params.model_uri},
    )
    writer.write_table(RECOMMENDATIONS_FILE, table)
    users = table.num_rows // max(1, min(params.top_k, n_items))
    summary = {
        "users": users,
        "rows": table.num_rows,
        "top_k": params.top_k,
        "candidate_items": n_items,
        "mode": mode,
        "candidate_budget": contract.RECOMMEND_CANDIDATES,
        "popular_candidates": contract.RECOMMEND_POPULAR if mode == TWO_STAGE else 0,
        "model_uri": params.model_uri,
        "context": {"device": params.device, "position": params.position, "hour": params.hour},
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    writer.commit(summary=summary)
    return summary


def run(params: RecommendParams, reporter: Reporter) -> dict[str, Any]:
    use_tracking(params.mlflow)  # models:/ URIs resolve against this store
    summary = recommend_to(params, reporter)
    reporter.info(f"committed {params.out_uri}: {summary}")
    return summary


main = workload_main(RecommendParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
