"""Run the full-rebuild flow and print what each stage's cache lookup cost (identity of its config, upstream, data
and code, the artifact's verification and its score's lookup: the `lookup_s` metric of its MLflow run).

Run it twice with the same arguments: the second run is the unchanged rebuild, all cache hits.

    python scripts/measure_lookup.py --profile cpu --spider-dir ../shared/spider
"""

from __future__ import annotations

import argparse
import os
import time

from flows.rebuild import full_rebuild
from sqlcopilot_core import tracking

STAGES = ("download_base", "finetune", "prune", "distill", "export", "build")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--spider-dir")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE")
    args = parser.parse_args()
    started = time.perf_counter()
    result = full_rebuild(profile=args.profile, overrides=args.set, spider_dir=args.spider_dir)
    wall = time.perf_counter() - started
    runs = tracking.client().search_runs([tracking.experiment_id()],
                                         f"tags.mlflow.parentRunId = '{result['mlflow_run_id']}'")
    by_stage = {r.data.tags.get("stage"): r for r in runs}
    total = 0.0
    print(f"{'stage':<14} {'cache_hit':<9} {'lookup_s':>8}")
    for stage in STAGES:
        run = by_stage[stage]
        lookup = run.data.metrics.get("lookup_s", float("nan"))
        total += lookup
        print(f"{stage:<14} {run.data.tags['cache_hit']:<9} {lookup:>8.3f}")
    print(f"{'all stages':<24} {total:>8.3f} s of lookup; the whole flow {wall:.1f} s wall (gold check, MLflow and "
          f"registry included); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
