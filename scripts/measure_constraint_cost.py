"""What the schema constraint costs the C++ runner per decode step: decode_ms per step of beams with and without
"constraint" on the same prompts (a tiny export unless --export is given; a two-table SQLite database).

    .venv/bin/python scripts/measure_constraint_cost.py [--runner work/build/cpp-tests/sqlcopilot-runner]
        [--export DIR] [--repeats 5] [--decode graph|kernel|auto] [--threads 1]

Prints, per num_beams, decode microseconds per walk (one per generated token position: steps + 1, each giving every
live beam one token), the part of it spent choosing candidates (the reply's walk_ms: the walk's bookkeeping and the
constraint's advance() calls, plus the wider walk when it rejects the best candidates) and the constraint checks per
walk; then the constraint's cost per step and per generated token (per step / num_beams).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlcopilot_core.cpp_runtime import CppRunner  # noqa: E402
from sqlcopilot_core.export import ExportConfig, export_model, load_exported  # noqa: E402
from sqlcopilot_core.sqlconstraint import constraint_spec  # noqa: E402

PROMPTS = ["-- how many singers?\nSELECT", "-- names of concerts after 2014\nSELECT name FROM ",
           "-- oldest singer\n", "-- schema: singer(name, age)\n-- average age\nSELECT"]


def tiny_export(root: Path) -> Path:
    from tests.core.test_export import PROMPTS as PARITY_PROMPTS, make_model_folder

    export_model(make_model_folder(root / "model"), root / "export", ExportConfig(max_seq_len=96), PARITY_PROMPTS)
    return root / "export"


def database(root: Path) -> Path:
    path = root / "concerts.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
        db.execute("CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, name TEXT, year INTEGER, singer_id INTEGER)")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", default="work/build/cpp-tests/sqlcopilot-runner")
    parser.add_argument("--export")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export = Path(args.export) if args.export else tiny_export(root)
        spec = constraint_spec(database(root))
        tokenizer = load_exported(export).tokenizer()
        prompts = [tokenizer(p).input_ids for p in PROMPTS]
        with CppRunner(args.runner, export, threads=args.threads, decode=args.decode) as runner:
            runner.beams(prompts[0], 4, 4, constraint=spec)  # loads the vocabulary and builds the constraint
            for num_beams in (1, 4):
                totals = {}
                for name, extra in (("free", {}), ("constrained", {"constraint": spec})):
                    ms = walk = steps = checks = 0.0
                    for _ in range(args.repeats):
                        for ids in prompts:
                            reply = runner._request({"input_ids": ids, "num_beams": num_beams,
                                                     "max_new_tokens": args.max_new_tokens, **extra})
                            ms, walk = ms + reply["decode_ms"], walk + reply["walk_ms"]
                            steps, checks, path = steps + reply["steps"] + 1, checks + reply["constraint_checks"], \
                                reply["decode"]
                    totals[name] = (ms / steps, walk / steps)
                    print(f"num_beams {num_beams} {name:>11} ({path} decode): {ms / steps * 1000:.1f} us/step of which "
                          f"{walk / steps * 1000:.1f} us choosing candidates, {checks / steps:.1f} constraint checks/step"
                          f" over {int(steps)} walks")
                decode_cost = totals["constrained"][0] - totals["free"][0]
                walk_cost = totals["constrained"][1] - totals["free"][1]
                print(f"num_beams {num_beams}: the constraint costs {walk_cost * 1000:+.1f} us/step in the walk "
                      f"({walk_cost / num_beams * 1000:+.1f} us per generated token, "
                      f"{walk_cost / totals['free'][0] * 100:+.1f}% of an unconstrained step); whole decode_ms "
                      f"difference {decode_cost * 1000:+.1f} us/step (noisier)")


if __name__ == "__main__":
    main()
