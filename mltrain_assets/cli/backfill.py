"""Date-range backfills through Dagster's public GraphQL API (what the UI's backfill dialog calls).

A backfill is an *asset* backfill: the daemon runs it in dependency order across partition
definitions (days, and days x cities), including the trailing windows upstream assets need.
"""

from __future__ import annotations

import time

from mltrain_assets.core.partitions import require_partitions_from
from mltrain_assets.core.pipeline import load_pipeline

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions error { message } }
    ... on PythonError { message }
  }
}
"""

FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def partitions_by_assets(pipeline_name: str, start: str, end: str, keys: list[str] | None = None) -> list[dict]:
    """The GraphQL ``partitionsByAssets`` selection for a pipeline over ``start..end`` (inclusive).

    The ingestion asset, and the per-day assets built from each landed day, reach back as far as
    the pipeline's landing window; keyed assets (date x city) get one contiguous range per key.
    """
    if end < start:
        raise ValueError(f"--end {end} is before --start {start}")
    pipeline = load_pipeline(pipeline_name)
    require_partitions_from(
        pipeline.landing_window.first(start), f"a {pipeline_name} backfill from {start} ({pipeline.ingestion_asset})"
    )
    selection = [  # each landing dataset's assets reach back as far as its own window
        {"assetKey": {"path": [name]}, "partitions": {"ranges": [{"start": landing.window.first(start), "end": end}]}}
        for landing in pipeline.landings
        for name in (landing.asset, *landing.day_assets)
    ]
    for name in pipeline.daily_assets:
        selection.append({"assetKey": {"path": [name]}, "partitions": {"ranges": [{"start": start, "end": end}]}})
    if pipeline.keyed_assets:
        # Date x key partition keys order key-major ("nyc|2026-03-01"), so one contiguous range per key.
        assert pipeline.keys is not None  # keyed assets have a key dimension (core/pipeline.py)
        key_ranges = [{"start": f"{k}|{start}", "end": f"{k}|{end}"} for k in (keys or pipeline.keys())]
        for name in pipeline.keyed_assets:
            selection.append({"assetKey": {"path": [name]}, "partitions": {"ranges": key_ranges}})
    return selection


def _graphql(url: str, query: str, variables: dict) -> dict:
    """One GraphQL request through gql (what Dagster's own ``DagsterGraphQLClient`` is built on; that
    client has no backfill call, so the mutation is ours)."""
    from gql import Client, gql
    from gql.transport.exceptions import TransportQueryError
    from gql.transport.requests import RequestsHTTPTransport

    transport = RequestsHTTPTransport(url=f"{url.rstrip('/')}/graphql", timeout=60)
    try:
        with Client(transport=transport, fetch_schema_from_transport=False) as session:
            return session.execute(gql(query), variable_values=variables)
    except TransportQueryError as refused:
        raise RuntimeError(f"GraphQL error from {url}: {refused.errors}") from None


def launch_backfill(url: str, pipeline: str, start: str, end: str, keys: list[str] | None = None) -> str:
    params = {
        "partitionsByAssets": partitions_by_assets(pipeline, start, end, keys),
        "title": f"mltrain {pipeline} {start}..{end}",
        "tags": [{"key": "mltrain/backfill", "value": f"{pipeline}:{start}..{end}"}],
    }
    result = _graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill not launched ({result['__typename']}): {result.get('message')}")
    return result["backfillId"]


def backfill_status(url: str, backfill_id: str) -> dict:
    result = _graphql(url, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise RuntimeError(f"backfill {backfill_id}: {result.get('message')}")
    return result


def wait_for_backfill(url: str, backfill_id: str, timeout_s: float = 3600, poll_s: float = 5, progress=print) -> dict:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        status = backfill_status(url, backfill_id)
        if status["status"] != last:
            progress(f"backfill {backfill_id}: {status['status']}")
            last = status["status"]
        if status["status"] in FINISHED:
            return status
        time.sleep(poll_s)
    raise TimeoutError(f"backfill {backfill_id} still {last} after {timeout_s:.0f}s")
