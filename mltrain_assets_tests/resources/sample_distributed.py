"""A tiny distributed workload: each node records what it was told, node 0 reports and commits.

Stands in for torchrun training when testing how the backends launch ``nnodes`` nodes: every
node appends ``{node_rank, completion index, rdzv_endpoint, world_size}`` to ``record_file``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from mltrain_assets.workloads.common.params import COMPLETION_INDEX_ENV, DistributedParams, runtime
from mltrain_assets.workloads.common.runtime import Reporter, workload_main


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleDistributedParams(DistributedParams):
    """Records each node's view of the topology; node 0 reports it."""

    module = "mltrain_assets_tests.resources.sample_distributed"
    commits = False

    nproc_per_node: int = runtime(default=2)
    record_file: str = runtime(default="")


def body(params: SampleDistributedParams, reporter: Reporter) -> dict:
    rank = params.resolved_node_rank()
    with open(params.record_file, "a") as record:
        record.write(
            json.dumps(
                {
                    "node_rank": rank,
                    "completion_index": os.environ.get(COMPLETION_INDEX_ENV),
                    "rdzv_endpoint": params.rdzv_endpoint,
                    "world_size": params.world_size,
                    "pipes": bool(os.environ.get("DAGSTER_PIPES_CONTEXT")),
                }
            )
            + "\n"
        )
    return {"reported_by": rank, "world_size": params.world_size, "nnodes": params.nnodes}


main = workload_main(SampleDistributedParams, body)

if __name__ == "__main__":
    sys.exit(main())
