"""The `sqlcopilot` command: rebuild, sweep, evaluate, predict, ask, sample. It sits above flows/ (it runs them),
outside the library, which never imports Prefect.

    sqlcopilot --help            # or: python -m sqlcopilot_cli --help
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_rebuild(args) -> int:
    from flows.server import prefect_api

    with prefect_api():
        from flows.rebuild import full_rebuild

        result = full_rebuild(profile=args.profile, overrides=args.set, spider_dir=args.spider_dir)
    print(json.dumps(result, indent=2))
    return 0


def cmd_sweep(args) -> int:
    from flows.server import prefect_api

    ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    with prefect_api():
        from flows.sweep import prune_sweep

        result = prune_sweep(profile=args.profile, ratios=ratios, overrides=args.set, spider_dir=args.spider_dir,
                             teacher=args.teacher, control=not args.no_control, cpp_speed=args.cpp_speed,
                             prune_hidden_below=args.prune_hidden_below)
    print(json.dumps({"rows": result["rows"], "control": (result["control"] or {}).get("metrics")}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from sqlcopilot_core import sqlpool
    from sqlcopilot_core.evaluation import (format_summary_table, prepare_output_dir, read_predictions,
                                            score_predictions, write_summary)
    from sqlcopilot_core.scoring import resolve_spider_dir
    from sqlcopilot_core.spider import load_split

    if args.timeout <= 0 or args.max_rows < 1:
        raise ValueError("--timeout must be positive and --max-rows at least 1")
    prepare_output_dir(args.out)
    sqlpool.prestart()  # the query worker starts while the files are read
    examples = load_split(resolve_spider_dir(args.spider_dir), args.split)
    predictions = read_predictions(Path(args.predictions), examples)
    summary = score_predictions(examples, predictions, timeout_s=args.timeout, max_rows=args.max_rows)
    write_summary(summary, Path(args.out))
    print(format_summary_table(summary))
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


def with_prompt_options(args, settings):
    """`settings` with the prompt options given on the command line replaced (--max-schema-tokens 0: no limit)."""
    import dataclasses

    given = {"form": args.prompt_form, "max_schema_tokens": args.max_schema_tokens, "value_hints": args.value_hints}
    given = {k: v for k, v in given.items() if v is not None}
    if given.get("max_schema_tokens") == 0:
        given["max_schema_tokens"] = None
    return dataclasses.replace(settings, **given)


def prompt_override(args, model_dir: Path):
    """The model's prompt settings with the command line's replacements, or None when none is given."""
    from sqlcopilot_core.prompting import model_prompt_settings

    if args.prompt_form is None and args.max_schema_tokens is None and args.value_hints is None:
        return None
    return with_prompt_options(args, model_prompt_settings(model_dir))


def add_prompt_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prompt (default: the settings the model was trained with, its prompt.json)")
    group.add_argument("--prompt-form", choices=["compact", "create_table"], help="schema text form")
    group.add_argument("--max-schema-tokens", type=int, help="schema budget in tokens (0 = no limit)")
    group.add_argument("--value-hints", type=int, help="lines of matching cell values shown (0 = none)")


def add_decoding_options(parser: argparse.ArgumentParser, default: str, constrained: bool = False) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--decoding", default=default, choices=["greedy", "beam", "guided"],
                       help=f"greedy; beam: the most probable of --num-beams candidates; guided: the most probable "
                            f"candidate that executes read-only (default {default})")
    group.add_argument("--num-beams", type=int, default=4, help="beams of beam and guided decoding (default 4)")
    group.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=constrained,
                       help=f"allow only tokens that can still make valid SQL over the database's names (default "
                            f"{'on' if constrained else 'off'})")
    group.add_argument("--prefer-nonempty", action="store_true",
                       help="guided: prefer the first candidate whose result has rows")
    group.add_argument("--retry-beams", type=int, default=8,
                       help="guided: decode a question none of whose candidates runs once more with this many beams "
                            "(0: never; default 8)")


def decoding_settings(args) -> dict:
    return {"decoding": args.decoding, "num_beams": args.num_beams, "constrained": args.constrained,
            "prefer_nonempty": args.prefer_nonempty, "retry_beams": args.retry_beams}


def cmd_predict(args) -> int:
    from sqlcopilot_core.generate import predict_examples, write_predictions_jsonl
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.prompting import model_prompt_settings
    from sqlcopilot_core.scoring import EvalConfig, predict_config, resolve_spider_dir
    from sqlcopilot_core.spider import load_split

    examples = load_split(resolve_spider_dir(args.spider_dir), args.split)[: args.limit]
    config = EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, **decoding_settings(args))
    if args.runtime == "cpp":
        from sqlcopilot_core.copilot import predict_with_runner, resolve_runtime

        runtime = resolve_runtime(args.model, args.runner)
        preds = predict_with_runner(Path(args.model), examples, config, args.runner,
                                    prompt=prompt_override(args, runtime.export_dir))
    else:
        model, tokenizer = load_model(args.model)
        prompt = model_prompt_settings(args.model, prompt_override(args, Path(args.model)), where="sqlcopilot predict")
        preds = predict_examples(model, tokenizer, examples, predict_config(config, prompt))
    write_predictions_jsonl(args.out, examples, preds)
    print(f"wrote {len(preds)} predictions to {args.out}")
    return 0


def cmd_ask(args) -> int:
    from sqlcopilot_core import copilot

    runtime = copilot.resolve_runtime(args.model, args.runner)
    if args.batch:
        items = json.loads(Path(args.batch).read_text())
        if not isinstance(items, list) or not all(isinstance(i, dict) and {"db", "question"} <= set(i) for i in items):
            raise ValueError(f"{args.batch}: expected a JSON list of {{\"db\": ..., \"question\": ...}} objects")
    elif args.db and args.question:
        items = [{"db": args.db, "question": args.question}]
    else:
        raise ValueError("give --db and a question, or --batch FILE")
    answers = copilot.ask_many(runtime, [(item["db"], item["question"]) for item in items], execute=args.execute,
                               prompt=prompt_override(args, runtime.export_dir), max_new_tokens=args.max_new_tokens,
                               progress=len(items) > 1, **decoding_settings(args))
    for answer in answers:
        if args.json:
            print(json.dumps(answer, default=str))
            continue
        print(f"-- {answer['question']}  ({answer['db']}, {answer['seconds']:.2f} s)")
        if answer.get("fallback"):
            print(f"-- {answer['fallback']}")
        if answer.get("retried"):
            print(f"-- none of the first {args.num_beams} candidates ran ({answer['retried']['first_error']}): "
                  f"decoded again with {answer['retried']['num_beams']} beams")
        if answer.get("tried"):
            print(f"-- {args.decoding} decoding: candidate {answer['chosen'] + 1} of {answer['candidates']} chosen "
                  f"after trying {answer['tried']}"
                  + "".join(f"\n--   #{r['index'] + 1} rejected: {r['reason']}" for r in answer["rejected"])
                  + (f"\n-- no candidate ran: {answer['error']}" if answer.get("error") else "")
                  + (f"\n-- candidate {answer['chosen'] + 1} was cut off at {args.max_new_tokens} tokens; its "
                     f"longest statement that runs is the answer" if answer.get("cut_from") else ""))
        print(answer["sql"] + ";")
        if args.execute:
            if answer["error_kind"]:
                print(f"error ({answer['error_kind']}): {answer['error']}")
            else:
                print(copilot.format_table(answer["columns"], answer["rows"]))
        print()
    return 0


def cmd_schema_stats(args) -> int:
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.prompting import PromptSettings, model_prompt_settings
    from sqlcopilot_core.schema_prompt import schema_stats
    from sqlcopilot_core.scoring import resolve_spider_dir

    _, tokenizer = load_model(args.model) if args.model else (None, None)
    settings = with_prompt_options(args, model_prompt_settings(args.model) if args.model else PromptSettings())
    print(json.dumps(schema_stats(resolve_spider_dir(args.spider_dir), args.split, settings, tokenizer), indent=2))
    return 0


def cmd_sample(args) -> int:
    from sqlcopilot_core.sample import build_sample_spider, ensure_sample_spider

    out = build_sample_spider(Path(args.out)) if args.out else ensure_sample_spider()
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqlcopilot", description="Offline text-to-SQL model factory.")
    sub = parser.add_subparsers(dest="command", required=True)

    rebuild = sub.add_parser("rebuild", help="run the full_rebuild flow locally")
    rebuild.add_argument("--profile", default="cpu", help="smoke | cpu | gpu | path to a profile YAML")
    rebuild.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE", help="override a setting")
    rebuild.add_argument("--spider-dir", help="Spider-format folder (default $SPIDER_DIR, else the sample data)")
    rebuild.set_defaults(func=cmd_rebuild)

    sweep = sub.add_parser("sweep", help="run the prune_sweep flow locally: one teacher, several pruning ratios")
    sweep.add_argument("--profile", default="cpu", help="smoke | cpu | gpu | path to a profile YAML")
    sweep.add_argument("--ratios", default="0.75,0.5,0.25,0.12", help="comma-separated fractions of parameters kept")
    sweep.add_argument("--no-control", action="store_true",
                       help="skip the control (the teacher fine-tuned on for the distillation budget, unpruned)")
    sweep.add_argument("--cpp-speed", action="store_true",
                       help="also export and build every student and measure its C++ decode tokens/s")
    sweep.add_argument("--prune-hidden-below", type=float, default=0.2,
                       help="ratios below this also prune the hidden width (default 0.2)")
    sweep.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE", help="override a setting")
    sweep.add_argument("--spider-dir", help="Spider-format folder (default $SPIDER_DIR, else the sample data)")
    sweep.add_argument("--teacher", help="an existing finetune artifact folder to sweep (skips download_base and "
                       "finetune)")
    sweep.set_defaults(func=cmd_sweep)

    evaluate = sub.add_parser("evaluate", help="score a predictions file by execution accuracy")
    evaluate.add_argument("--spider-dir", help="Spider-format folder (default $SPIDER_DIR, else the sample data)")
    evaluate.add_argument("--split", default="dev", choices=["dev", "train"])
    evaluate.add_argument("--predictions", required=True, help="JSON lines {db_id, question, pred} or one SQL per line")
    evaluate.add_argument("--out", required=True, help="folder for summary.json and predictions_scored.jsonl")
    evaluate.add_argument("--timeout", type=float, default=5.0, help="seconds per query (its process is ended past it)")
    evaluate.add_argument("--max-rows", type=int, default=10000, help="row cap per predicted query")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser("predict", help="write predictions of a model for a Spider split")
    predict.add_argument("--model", required=True, help="model artifact folder (or exported folder for --runtime cpp)")
    predict.add_argument("--spider-dir")
    predict.add_argument("--split", default="dev", choices=["dev", "train"])
    predict.add_argument("--out", required=True)
    predict.add_argument("--limit", type=int)
    predict.add_argument("--max-new-tokens", type=int, default=96)
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--runtime", default="python", choices=["python", "cpp"])
    predict.add_argument("--runner", help="sqlcopilot-runner program for --runtime cpp (default: the build artifact's)")
    add_prompt_options(predict)
    add_decoding_options(predict, "greedy")
    predict.set_defaults(func=cmd_predict)

    ask = sub.add_parser("ask", help="ask a SQLite database a question through the compiled model (C++ runtime)")
    ask.add_argument("question", nargs="?", help="the question, in English")
    ask.add_argument("--model", required=True, help="build artifact folder (or an export folder with --runner)")
    ask.add_argument("--db", help="SQLite database file")
    ask.add_argument("--batch", help="JSON file: a list of {db, question} objects")
    ask.add_argument("--runner", help="sqlcopilot-runner program (default: the build artifact's)")
    ask.add_argument("--execute", action="store_true", help="run the SQL read-only and print the result table")
    ask.add_argument("--json", action="store_true", help="print one JSON object per answer")
    ask.add_argument("--max-new-tokens", type=int, default=128)
    add_prompt_options(ask)
    add_decoding_options(ask, "guided", constrained=True)
    ask.set_defaults(func=cmd_ask)

    stats = sub.add_parser("schema-stats", help="prompt statistics of a Spider-format folder as JSON: how often the "
                           "schema prompt shows every table and column the gold SQL needs")
    stats.add_argument("--spider-dir", help="Spider-format folder (default $SPIDER_DIR, else the sample data)")
    stats.add_argument("--split", default="dev", choices=["dev", "train"])
    stats.add_argument("--model", help="model folder: its tokenizer counts tokens and its prompt.json gives the "
                       "settings (default: ~4 characters a token, the default settings)")
    add_prompt_options(stats)
    stats.set_defaults(func=cmd_schema_stats)

    sample = sub.add_parser("sample", help="build the embedded sample dataset")
    sample.add_argument("--out", help="folder to build into (default <work>/sample_spider)")
    sample.set_defaults(func=cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"sqlcopilot {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
