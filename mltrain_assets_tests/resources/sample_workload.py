"""A tiny workload for exercising the compute backend: succeeds, rejects data, hangs or crashes."""

import argparse
import sys
import time

from mltrain_assets.workloads._runtime import DataRejected, run_workload


def body(args, reporter):
    reporter.info(f"mode={args.mode}")
    if args.mode == "reject":
        raise DataRejected("partition 2026-01-02: rule known_city: 3 rows (0.3%) have city='paris'")
    if args.mode == "hang":
        time.sleep(120)
    if args.mode == "crash":
        raise RuntimeError("boom")
    return {"answer": 42, "mode": args.mode}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="ok")
    sys.exit(run_workload("sample", parser, body))
