"""Run the full-rebuild chain through the library (sqlcopilot_core.stage.run, what each task calls; no Prefect
server) and print what each stage's cache lookup cost: `lookup_s` (identity of its config, upstream keys, data and
code, the artifact's verification and its score's lookup, from its MLflow run) and the wall time of the whole
stage call (MLflow run included).

Run it twice with the same arguments: the second run is the unchanged rebuild, all cache hits.

    python scripts/measure_lookup.py --profile cpu --spider-dir ../shared/spider
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from flows.settings import resolve_settings
from sqlcopilot_core import stage, tracking
from sqlcopilot_core.stages import build, distill, download_base, export, finetune, prune


def rebuild(settings: dict, parent_run_id: str) -> dict[str, float]:
    """The full-rebuild order of flows/rebuild.py; returns each stage call's wall seconds."""
    evaluate, folder = settings["evaluate"], settings["spider_dir"]
    seconds, artifacts = {}, {}
    chain = [(download_base, lambda: {}), (finetune, lambda: {"base": artifacts["download_base"]}),
             (prune, lambda: {"teacher": artifacts["finetune"]}),
             (distill, lambda: {"student": artifacts["prune"], "teacher": artifacts["finetune"]}),
             (export, lambda: {"model": artifacts["distill"]}), (build, lambda: {"export": artifacts["export"]})]
    for module, upstream in chain:
        name = module.NAME
        started = time.perf_counter()
        artifacts[name] = stage.run(module, settings.get(name, {}), upstream(), folder, evaluate, parent_run_id)
        seconds[name] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--spider-dir")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = resolve_settings(args.profile, args.set, args.spider_dir)
    with tracking.run("measure-lookup", tags={"profile": args.profile}) as parent:
        seconds = rebuild(settings, parent)
    runs = tracking.client().search_runs([tracking.experiment_id()], f"tags.mlflow.parentRunId = '{parent}'")
    by_stage = {r.data.tags["stage"]: r for r in runs}
    print(f"{'stage':<14} {'cache_hit':<9} {'lookup_s':>8} {'call_s':>8}")
    for name, wall in seconds.items():
        run = by_stage[name]
        print(f"{name:<14} {run.data.tags['cache_hit']:<9} {run.data.metrics['lookup_s']:>8.3f} {wall:>8.3f}")
    print(f"{'all stages':<24} {sum(r.data.metrics['lookup_s'] for r in runs):>8.3f} {sum(seconds.values()):>8.3f}"
          f"   load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
