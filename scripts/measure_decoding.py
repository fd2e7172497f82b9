"""Execution accuracy and the share of answers that fail to execute, per decoding, on a Spider split.

    python scripts/measure_decoding.py --model MODEL_DIR --spider-dir ../shared/spider --split dev \
        --out work/runs/decoding [--num-beams 4] [--constrained] [--limit N] [--largest-databases K]

One beam run gives two rows: `beam` (its most probable candidate) and `guided` (the most probable that executes);
with --constrained the same under the schema constraint. Greedy is scored with --greedy. Each row: ex, its 95%
interval, share failing to execute, seconds. Writes <out>/<row>/ (predictions, summary) and prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlcopilot_core.beams import choose_runnable  # noqa: E402
from sqlcopilot_core.generate import PredictConfig, predict_details  # noqa: E402
from sqlcopilot_core.modeling import load_model  # noqa: E402
from sqlcopilot_core.prompting import model_prompt_settings  # noqa: E402
from sqlcopilot_core.scoring import EvalConfig, score_predictions_to  # noqa: E402
from sqlcopilot_core.spider import load_split  # noqa: E402


def row(name: str, out: Path, examples, sqls: list[str], seconds: float, extra: dict | None = None) -> dict:
    summary = score_predictions_to(out / name, examples, sqls, EvalConfig())
    failing = sum(summary["errors"].values())
    result = {"decoding": name, "n": summary["n"], "ex": round(summary["ex"], 4),
              "ex_ci": [round(v, 4) for v in summary["ex_ci"]], "fail_share": round(failing / summary["n"], 4),
              "errors": summary["errors"], "seconds": round(seconds, 1), **(extra or {})}
    print(json.dumps(result), flush=True)
    return result


def largest_databases(examples, k: int) -> list:
    """The examples about the k databases with the most columns (ties: by name), in their split's order."""
    from sqlcopilot_core.spider import read_schema

    columns = {}
    for example in examples:
        if example.db_id not in columns:
            schema = read_schema(example.db_path, example.db_id)
            columns[example.db_id] = sum(len(table.columns) for table in schema.tables)
    chosen = set(sorted(columns, key=lambda db: (-columns[db], db))[:k])
    print(json.dumps({"largest_databases": {db: columns[db] for db in sorted(chosen, key=lambda d: -columns[d])}}),
          flush=True)
    return [e for e in examples if e.db_id in chosen]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--spider-dir", required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--constrained", action="store_true")
    parser.add_argument("--greedy", action="store_true", help="score greedy decoding (with --constrained: constrained)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--largest-databases", type=int, metavar="K",
                        help="only the questions about the K databases with the most columns (before --limit)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--export", help="decode through the C++ runner with this export folder (--model: its "
                        "source, unused)")
    parser.add_argument("--runner", help="sqlcopilot-runner program (with --export)")
    parser.add_argument("--no-prefix-reuse", action="store_true")
    parser.add_argument("--retry-beams", type=int, default=8, help="guided: beams of the second search (0: none)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    examples = load_split(args.spider_dir, args.split)
    if args.largest_databases:
        examples = largest_databases(examples, args.largest_databases)
    if args.limit:
        examples = [examples[i * len(examples) // args.limit] for i in range(args.limit)]
    suffix = "+constrained" if args.constrained else ""
    if args.export:
        return cpp_rows(args, examples, out, suffix)
    model, tokenizer = load_model(args.model)
    prompt = model_prompt_settings(args.model)
    if args.greedy:
        config = PredictConfig(prompt, max_new_tokens=args.max_new_tokens, batch_size=16, constrained=args.constrained)
        start = time.perf_counter()
        answers = predict_details(model, tokenizer, examples, config)
        row("greedy" + suffix, out, examples, [a["sql"] for a in answers], time.perf_counter() - start)
        return 0
    config = PredictConfig(prompt, max_new_tokens=args.max_new_tokens, decoding="guided", num_beams=args.num_beams,
                           constrained=args.constrained, retry_beams=args.retry_beams)
    start = time.perf_counter()
    answers = predict_details(model, tokenizer, examples, config)
    seconds = time.perf_counter() - start
    guided_rows(out, examples, answers, seconds, suffix, args.num_beams)
    return 0


def guided_rows(out: Path, examples, answers: list[dict], seconds: float, suffix: str, num_beams: int) -> None:
    (out / f"guided{suffix}").mkdir(parents=True, exist_ok=True)
    with open(out / f"guided{suffix}" / "answers.jsonl", "w") as handle:
        for example, answer in zip(examples, answers):
            handle.write(json.dumps({"index": example.index, **answer}) + "\n")
    tried = sum(a["tried"] for a in answers) / len(answers)
    # beam: the first search's top candidate (a retried answer keeps the first search's candidates)
    row(f"beam{suffix}", out, examples, [(a.get("retried") or {}).get("first_candidates", a["candidate_sqls"])[0]
                                         for a in answers], seconds,
        {"num_beams": num_beams})
    row(f"guided{suffix}", out, examples, [a["sql"] for a in answers], seconds,
        {"num_beams": num_beams, "mean_tried": round(tried, 2),
         "none_ran": sum(a["error"] is not None for a in answers),
         "fallbacks": sum(bool(a.get("fallback")) for a in answers),
         "cut": sum(bool(a.get("cut_from")) for a in answers),
         "retried": sum(bool(a.get("retried")) for a in answers)})


def cpp_rows(args, examples, out: Path, suffix: str) -> int:
    """The same rows through the C++ runner (copilot.decode_prompts: grouped by schema prefix)."""
    from transformers import AutoTokenizer

    from sqlcopilot_core.copilot import Decoding, Runtime, decode_prompts
    from sqlcopilot_core.prompting import Prompter

    runtime = Runtime(Path(args.export), Path(args.runner))
    tokenizer = AutoTokenizer.from_pretrained(runtime.export_dir)
    prompter = Prompter(model_prompt_settings(runtime.export_dir), tokenizer)
    prompts = [(*prompter.split_ids(e.db_path, e.question), e.db_path) for e in examples]
    decoding = "greedy" if args.greedy else "guided"
    config = Decoding(decoding, args.num_beams, args.constrained, max_new_tokens=args.max_new_tokens,
                      prefix_reuse=not args.no_prefix_reuse, retry_beams=args.retry_beams)
    start = time.perf_counter()
    answers = decode_prompts(runtime, tokenizer, prompts, config)
    seconds = time.perf_counter() - start
    out = out / "cpp"
    if args.greedy:
        row("greedy" + suffix, out, examples, [a["sql"] for a in answers], seconds,
            {"runtime": "cpp", "prefix_reused": sum(bool(a.get("prefix_reused")) for a in answers)})
    else:
        guided_rows(out, examples, answers, seconds, suffix, args.num_beams)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
