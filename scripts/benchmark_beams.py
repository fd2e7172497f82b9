"""Beam decoding and prefix reuse through the C++ runner, on Spider dev prompts.

1. Per-query latency for num_beams 1, 4, 8 (and greedy), on the same prompts: once decoding a fixed number of tokens
   (end-of-text and statement ends ignored, so every setting does the same number of steps) and once stopping
   naturally (end-of-text or a statement end, as predictions are made). A beam step advances all beams with one read
   of the weights, so its cost over one greedy step is the extra compute and attention, not N times the weights.
2. The time to answer a set of Spider questions grouped by database, with and without reuse of the schema prefix's
   key/value cache (the prompt's prefix, `Prompter.parts`, whose token count is the prefix length): with reuse, only
   the first question about a database prefills its schema.

    .venv/bin/python scripts/benchmark_beams.py --model work/smollm2_base --export work/export_fp32
    .venv/bin/python scripts/benchmark_beams.py --model work/smollm2_base --export work/export_fp32 --decode graph

The export must be of format 3 or later (its graph has prefill_at and decode_beams; an older one: export again).
Questions whose schema is filtered by relevance (too large for the prompt budget) have prefixes of their own, so
"prefixes reused" can be below questions minus databases.

The read bandwidth is measured just before and just after every timed request (as scripts/benchmark_runtimes.py
does: on a shared machine it moves by a factor of two within minutes); each setting's decode speed is compared with
the bound that bandwidth sets for one greedy token (every weight read once). On a machine shared with other work,
pass --passive (OMP_WAIT_POLICY=PASSIVE for the runner) or --threads 1.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark_runtimes import bytes_per_token, ensure_export, read_bandwidth_gbs  # noqa: E402
from sqlcopilot_core.build import build_runner  # noqa: E402
from sqlcopilot_core.cpp_runtime import CppRunner  # noqa: E402
from sqlcopilot_core.export import DTYPES, load_exported  # noqa: E402
from sqlcopilot_core.prompting import Prompter, model_prompt_settings  # noqa: E402
from sqlcopilot_core.spider import load_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_setting(runner: CppRunner, ids: list[int], beams: int, new_tokens: int, natural: bool,
                prefix_len: int = 0) -> dict:
    """One request: beams = 0 is greedy (`generate`), else `beams`; natural stops at end-of-text or a statement end,
    otherwise exactly `new_tokens` tokens are decoded. Returns the reply's timings, steps and tokens."""
    stop = {"stop_at_eos": natural, "stop_at_statement_end": natural, "prefix_len": prefix_len}
    start = time.perf_counter()
    if beams == 0:
        (tokens, timings), = runner.generate([ids], new_tokens, **stop)
        steps, outputs = len(tokens) - 1, [tokens]
    else:
        candidates, timings = runner.beams(ids, beams, new_tokens, **stop)
        steps, outputs = timings["steps"], [list(c.tokens) for c in candidates]
    return {"prefill_ms": timings["prefill_ms"], "decode_ms": timings["decode_ms"], "steps": steps,
            "wall_ms": (time.perf_counter() - start) * 1e3, "outputs": outputs,
            "prefix_reused": timings["prefix_reused"]}


def latency(runner: CppRunner, prompts: list[list[int]], settings: list[int], new_tokens: int, natural: bool,
            repeats: int, threads: int) -> dict[int, list[dict]]:
    """Runs of every setting on every prompt, settings alternating prompt by prompt (background load hits them
    alike), each with the bandwidth read just before and after it."""
    runs: dict[int, list[dict]] = defaultdict(list)
    run_setting(runner, prompts[0], max(settings), new_tokens, natural)  # warm-up
    total = repeats * len(prompts) * len(settings)
    with tqdm(total=total, desc="natural stop" if natural else f"{new_tokens} tokens", unit="query") as bar:
        for _, ids, beams in itertools.product(range(repeats), prompts, settings):
            before = read_bandwidth_gbs(threads)
            run = run_setting(runner, ids, beams, new_tokens, natural)
            run["gbs"] = (before + read_bandwidth_gbs(threads)) / 2
            runs[beams].append(run)
            bar.update()
    return runs


def print_latency(runs: dict[int, list[dict]], per_token_bytes: float, title: str) -> None:
    base = statistics.median(r["decode_ms"] / max(1, r["steps"]) for r in runs[min(runs)])
    print(f"\n{title}")
    print(f"{'setting':10s} {'prefill ms':>10s} {'steps':>6s} {'step ms':>8s} {'vs greedy':>9s} {'query ms':>9s} "
          f"{'tok/s (all beams)':>17s} {'% of bound':>10s}")
    for beams, rows in sorted(runs.items()):
        step_ms = statistics.median(r["decode_ms"] / r["steps"] for r in rows if r["steps"])
        bound_ms = statistics.median(per_token_bytes / (r["gbs"] * 1e9) * 1e3 for r in rows)
        name = "greedy" if beams == 0 else f"{beams} beam{'s' if beams > 1 else ''}"
        print(f"{name:10s} {statistics.median(r['prefill_ms'] for r in rows):10.1f} "
              f"{statistics.mean(r['steps'] for r in rows):6.1f} {step_ms:8.2f} {step_ms / base:8.2f}x "
              f"{statistics.median(r['prefill_ms'] + r['decode_ms'] for r in rows):9.1f} "
              f"{max(1, beams) * 1e3 / step_ms:17.1f} {100 * bound_ms / step_ms:9.0f}%")
    print("(medians over prompts x repeats; step ms: decode time per step, bookkeeping included; % of bound: the "
          "time one greedy token's weights take to stream at the bandwidth read around the run / step ms)")


def grouped_questions(spider_dir: Path, prompter: Prompter, tokenizer, databases: int, per_database: int):
    """(db_id, prompt ids, prefix length) for `per_database` dev questions of each of the first `databases`
    databases with that many questions, in database order (how a batch of questions about a few databases comes)."""
    by_db: dict[str, list] = defaultdict(list)
    for example in load_split(spider_dir, "dev"):
        by_db[example.db_id].append(example)
    chosen = [db for db, examples in by_db.items() if len(examples) >= per_database][:databases]
    questions = []
    for db in chosen:
        for example in by_db[db][:per_database]:
            prefix, _ = prompter.parts(example.db_path, example.question)
            ids = prompter.ids(example.db_path, example.question)
            questions.append((db, ids, len(tokenizer(prefix).input_ids)))
    return questions


def prefix_reuse(runner_path: Path, export: Path, questions: list, beams: int, new_tokens: int, threads: int,
                 decode: str, env: dict | None) -> dict[str, dict]:
    """Every question answered (natural stop) once without and once with prefix reuse, each mode in its own fresh
    runner process; the totals, the prefill share and whether the answers agree."""
    results = {}
    for mode in ("full prompt", "prefix reused"):
        with CppRunner(runner_path, export, threads=threads, decode=decode, env=env) as runner:
            run_setting(runner, [1, 2, 3], 0, 2, natural=False)  # warm-up on a prompt no question shares
            before = read_bandwidth_gbs(threads)
            start = time.perf_counter()
            runs = [run_setting(runner, ids, beams, new_tokens, True, prefix_len if mode == "prefix reused" else 0)
                    for _, ids, prefix_len in tqdm(questions, desc=mode, unit="question")]
            seconds = time.perf_counter() - start
            gbs = (before + read_bandwidth_gbs(threads)) / 2
        results[mode] = {"seconds": seconds, "prefill_s": sum(r["prefill_ms"] for r in runs) / 1e3,
                         "decode_s": sum(r["decode_ms"] for r in runs) / 1e3,
                         "reused": sum(r["prefix_reused"] for r in runs), "outputs": [r["outputs"] for r in runs],
                         "gbs": gbs}
    return results


def print_prefix_reuse(results: dict[str, dict], questions: list, beams: int) -> None:
    databases = len({db for db, _, _ in questions})
    prompt = statistics.mean(len(ids) for _, ids, _ in questions)
    prefix = statistics.mean(p for _, _, p in questions)
    print(f"\n{len(questions)} dev questions about {databases} databases, {'greedy' if beams <= 1 else f'{beams} beams'}"
          f", natural stop; prompts {prompt:.0f} tokens on average, of which {prefix:.0f} schema prefix")
    print(f"{'mode':14s} {'total s':>8s} {'prefill s':>9s} {'decode s':>9s} {'prefixes reused':>15s} {'GB/s':>6s}")
    for mode, row in results.items():
        print(f"{mode:14s} {row['seconds']:8.2f} {row['prefill_s']:9.2f} {row['decode_s']:9.2f} "
              f"{row['reused']:15d} {row['gbs']:6.1f}")
    full, reused = results["full prompt"], results["prefix reused"]
    same = sum(a == b for a, b in zip(full["outputs"], reused["outputs"]))
    print(f"speed-up {full['seconds'] / reused['seconds']:.2f}x; same answers on {same}/{len(questions)} questions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder (its prompt.json and tokenizer)")
    parser.add_argument("--export", type=Path, required=True, help="export folder (made if missing)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="dtype when exporting")
    parser.add_argument("--runner", type=Path, help="built sqlcopilot-runner (built into work/build if omitted)")
    parser.add_argument("--spider", type=Path, default=ROOT.parent / "shared" / "spider")
    parser.add_argument("--decode", default="auto", choices=["auto", "kernel", "graph"])
    parser.add_argument("--beams", default="1,4,8", help="beam counts to time (greedy is always timed too)")
    parser.add_argument("--prompts", type=int, default=4, help="dev prompts for the latency table")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens decoded per query (fixed-length run)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="token limit of the natural-stop runs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--databases", type=int, default=4, help="databases of the prefix-reuse run")
    parser.add_argument("--per-database", type=int, default=5, help="questions per database")
    parser.add_argument("--prefix-beams", type=int, default=1, help="beams of the prefix-reuse run (1 = greedy)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE for the runner")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: latency, natural, prefix")
    args = parser.parse_args()
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompter = Prompter(model_prompt_settings(args.model), tokenizer)
    examples = load_split(args.spider, "dev")[: args.prompts]
    prompts = [prompter.ids(e.db_path, e.question) for e in examples]
    ensure_export(args.model, args.export, args.dtype, [tokenizer.decode(ids) for ids in prompts[:2]])
    manifest = load_exported(args.export).manifest
    runner_path = args.runner or Path(build_runner(ROOT / "cpp", ROOT / "work" / "build" / "cpp-bench")["runner"])
    env = {"OMP_WAIT_POLICY": "PASSIVE"} if args.passive else None
    settings = [0] + [int(b) for b in args.beams.split(",") if b.strip()]
    per_token = bytes_per_token(manifest, statistics.mean(len(ids) for ids in prompts))
    print(f"load average before: {os.getloadavg()[0]:.2f}; {manifest['dtype']}, {args.threads} thread(s), "
          f"{per_token / 1e6:.0f} MB read per greedy token")

    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(CppRunner(runner_path, args.export, threads=args.threads, decode=args.decode,
                                               env=env, prefix_cache=0))
        if "latency" not in skip:
            runs = latency(runner, prompts, settings, args.new_tokens, False, args.repeats, args.threads)
            print_latency(runs, per_token, f"{args.new_tokens} tokens per query, stop disabled ({args.decode} decode)")
        if "natural" not in skip:
            runs = latency(runner, prompts, settings, args.max_new_tokens, True, args.repeats, args.threads)
            print_latency(runs, per_token, f"natural stop (end-of-text or statement end, at most "
                                           f"{args.max_new_tokens} tokens; {args.decode} decode)")
    if "prefix" not in skip:
        questions = grouped_questions(args.spider, prompter, tokenizer, args.databases, args.per_database)
        beams = args.prefix_beams if args.prefix_beams > 1 else 0  # 1: greedy
        results = prefix_reuse(runner_path, args.export, questions, beams, args.max_new_tokens,
                               args.threads, args.decode, env)
        print_prefix_reuse(results, questions, args.prefix_beams)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
