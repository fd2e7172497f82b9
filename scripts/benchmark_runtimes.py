"""Compare the ways to run one model on Spider dev prompts: transformers generate, the exported TorchScript graphs
driven from Python, and the C++ runner (decoding with its hand-written kernels, and with the graph's decode_step).
Checks they produce the same tokens, then prints prefill and decode speed (medians over repeats) and decode speed
as a fraction of the memory-bandwidth bound.

    .venv/bin/python scripts/benchmark_runtimes.py --model work/smollm2_base --export work/export_fp32
    .venv/bin/python scripts/benchmark_runtimes.py --model work/smollm2_base --export work/export_bf16 --dtype bfloat16

On a machine shared with other work, prefix OMP_WAIT_POLICY=PASSIVE or pass --threads 1: with the default spinning
wait, two threads that must meet at every operation slow each other down about twentyfold (all three runtimes).

The bound: decoding one token reads every weight matrix once (plus the key/value cache so far), so tokens/s can
not exceed bandwidth / bytes read per token; bandwidth is measured here by summing a 256 MiB tensor (8x the L3
cache) just before and just after every run, and each run is compared with the mean of those two readings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlcopilot_core.build import build_runner  # noqa: E402
from sqlcopilot_core.cpp_runtime import CppRunner  # noqa: E402
from sqlcopilot_core.export import DTYPES, ExportConfig, export_model, load_exported  # noqa: E402
from sqlcopilot_core.modeling import load_model  # noqa: E402
from sqlcopilot_core.prompting import Prompter, model_prompt_settings  # noqa: E402
from sqlcopilot_core.spider import load_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class StepClock(LogitsProcessor):
    """Notes the time whenever transformers has logits for a new token: the first call ends the prefill."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def run_transformers(model, ids: list[int], max_new: int, eos: int) -> tuple[list[int], float, float]:
    clock = StepClock()
    greedy = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new, eos_token_id=eos,
                              pad_token_id=eos)
    prompt = torch.tensor([ids])
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=greedy,
                             logits_processor=LogitsProcessorList([clock]))
    end = time.perf_counter()
    return out[0, len(ids):].tolist(), (clock.times[0] - start) * 1e3, (end - clock.times[0]) * 1e3


def run_graphs(exported, ids: list[int], max_new: int, eos: int) -> tuple[list[int], float, float]:
    """The same greedy rule as decoder.greedy_generate, timed around the prefill and the decode steps."""
    with torch.inference_mode():
        start = time.perf_counter()
        caches = exported.new_caches()
        tokens = [int(exported.prefill(torch.tensor([ids]), caches).argmax(-1))]
        prefilled = time.perf_counter()
        pos = len(ids)
        while len(tokens) < max_new and tokens[-1] != eos and pos < exported.max_seq_len:
            tokens.append(int(exported.decode_step(tokens[-1], pos, caches).argmax(-1)))
            pos += 1
        end = time.perf_counter()
    return tokens, (prefilled - start) * 1e3, (end - prefilled) * 1e3


def run_cpp(cpp: CppRunner, ids: list[int], max_new: int) -> tuple[list[int], float, float]:
    (out, timings), = cpp.generate([ids], max_new)
    return out, timings["prefill_ms"], timings["decode_ms"]


def measure(runtimes: dict, prompt_ids: list[list[int]], repeats: int, threads: int) -> tuple[dict, dict, list]:
    """(prefill_ms, decode_ms, new tokens, GB/s) per runtime per run, each runtime's tokens from the first repeat, and
    every bandwidth reading. Runtimes alternate prompt by prompt so background load on the machine hits them alike,
    and the read bandwidth is measured just before and just after every run: on a shared (virtual) machine it moves
    by a factor of two within minutes, so each run is judged against the mean of the readings around it."""
    runs: dict[str, list] = {name: [] for name in runtimes}
    tokens: dict[str, list] = {name: [] for name in runtimes}
    readings = []
    for run in runtimes.values():  # warm-up, unmeasured: first calls, and the runner processes finish loading
        run(prompt_ids[0])
    for repeat in range(repeats):
        for ids in prompt_ids:
            for name, run in runtimes.items():
                time.sleep(0.5)  # the previous runtime's OpenMP threads stop spinning before this one starts
                before = read_bandwidth_gbs(threads)  # also sets torch's thread count for the run
                out, prefill_ms, decode_ms = run(ids)
                readings += [before, read_bandwidth_gbs(threads)]
                runs[name].append((prefill_ms, decode_ms, len(out), (readings[-2] + readings[-1]) / 2))
                if repeat == 0:
                    tokens[name].append(out)
        print(f"repeat {repeat + 1}/{repeats} done", flush=True)
    return runs, tokens, readings


def report_agreement(tokens: dict[str, list]) -> None:
    cpp = [name for name in tokens if name.startswith("C++")]
    pairs = [("graphs from Python", "transformers generate"), *((name, "transformers generate") for name in cpp),
             *((name, "graphs from Python") for name in cpp)]
    for name, other in pairs:
        same = sum(a == b for a, b in zip(tokens[name], tokens[other]))
        print(f"{name} vs {other}: same tokens on {same}/{len(tokens[name])} prompts")


_READ_BUFFERS: dict[int, torch.Tensor] = {}


def read_bandwidth_gbs(threads: int, repeats: int = 5, size: int = 2 ** 26) -> float:
    """Median GB/s of summing a float32 tensor of `size` elements (256 MiB, 8x the L3 cache), a pure streaming read,
    with `threads` threads. Random values, so no page is a copy of another; the tensor is made once."""
    torch.set_num_threads(threads)
    if size not in _READ_BUFFERS:
        _READ_BUFFERS[size] = torch.rand(size)
    data = _READ_BUFFERS[size]
    data.sum()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - start)
    return data.numel() * 4 / statistics.median(times) / 1e9


def bytes_per_token(manifest: dict, position: float) -> float:
    """Bytes one decode step reads: every projection, the output matrix, and the key/value cache up to `position`."""
    hidden, head_dim = manifest["hidden_size"], manifest["head_dim"]
    weights = manifest["vocab_size"] * hidden
    cache = 0
    for layer in manifest["layers"]:
        heads, kv_heads, width = layer["num_attention_heads"], layer["num_key_value_heads"], layer["intermediate_size"]
        weights += hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * width
        cache += 2 * kv_heads * head_dim * position
    return (weights + cache) * torch.finfo(DTYPES[manifest["dtype"]]).bits / 8


def spider_prompt_ids(spider_dir: Path, tokenizer, count: int, model_dir: Path) -> list[list[int]]:
    """Prompts of the first `count` dev questions, built with the model's own prompt settings."""
    prompter = Prompter(model_prompt_settings(model_dir), tokenizer)
    return [prompter.ids(e.db_path, e.question) for e in load_split(spider_dir, "dev")[:count]]


def ensure_export(model_dir: Path, export_dir: Path, dtype: str, prompts: list[str]) -> None:
    if not (export_dir / "manifest.json").exists():
        print(f"exporting {model_dir} -> {export_dir} ({dtype})")
        export_model(model_dir, export_dir, ExportConfig(dtype=dtype, max_seq_len=2048), prompts)


def summarize(runs: list[tuple[float, float, int, float]], per_token_bytes: float) -> dict:
    """Medians over (prefill_ms, decode_ms, new tokens, GB/s) runs; decode speed counts tokens after the first, and
    its fraction of the bound uses the bandwidth read around the run."""
    decoding = [(decode / (new - 1), gbs) for _, decode, new, gbs in runs if new > 1]
    return {"prefill_ms": statistics.median(r[0] for r in runs),
            "query_ms": statistics.median(r[0] + r[1] for r in runs),
            "decode_tok_s": 1e3 / statistics.median(ms for ms, _ in decoding) if decoding else float("nan"),
            "of_bound": statistics.median((1e3 / ms) / (gbs * 1e9 / per_token_bytes) for ms, gbs in decoding)
            if decoding else float("nan")}


def print_table(results: dict[str, dict], new_tokens: float) -> None:
    hf = results["transformers generate"]["query_ms"]
    print(f"\n{'runtime':26s} {'prefill ms':>10s} {'decode tok/s':>12s} {'query ms':>9s} {'vs HF':>6s} "
          f"{'% of bound':>10s}")
    for name, row in results.items():
        print(f"{name:26s} {row['prefill_ms']:10.1f} {row['decode_tok_s']:12.1f} {row['query_ms']:9.1f} "
              f"{hf / row['query_ms']:5.2f}x {100 * row['of_bound']:9.0f}%")
    print(f"(median over prompts x repeats; {new_tokens:.1f} new tokens per query on average; % of bound: median "
          f"over runs of decode tokens/s / (bandwidth read around that run / bytes per token))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder (transformers format)")
    parser.add_argument("--export", type=Path, required=True, help="export folder (made if missing)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="dtype when exporting")
    parser.add_argument("--runner", type=Path, help="built sqlcopilot-runner (built into work/build if omitted)")
    parser.add_argument("--spider", type=Path, default=ROOT.parent / "shared" / "spider")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--decode", default="kernel,graph", help="C++ decode modes to run (kernel, graph, auto)")
    args = parser.parse_args()

    model, tokenizer = load_model(args.model, dtype=DTYPES[args.dtype])
    prompt_ids = spider_prompt_ids(args.spider, tokenizer, args.prompts, args.model)
    ensure_export(args.model, args.export, args.dtype, [tokenizer.decode(ids) for ids in prompt_ids[:2]])
    exported = load_exported(args.export)
    if exported.manifest["dtype"] != args.dtype:
        sys.exit(f"{args.export} holds a {exported.manifest['dtype']} export; pass --dtype {exported.manifest['dtype']}")
    runner = args.runner or Path(build_runner(ROOT / "cpp", ROOT / "work" / "build" / "cpp-bench")["runner"])
    eos = exported.eos_token_id
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores; other work on the machine skews timings)")
    torch.set_num_threads(args.threads)

    runtimes = {"transformers generate": lambda ids: run_transformers(model, ids, args.new_tokens, eos),
                "graphs from Python": lambda ids: run_graphs(exported, ids, args.new_tokens, eos)}
    with contextlib.ExitStack() as stack:
        for mode in [m.strip() for m in args.decode.split(",") if m.strip()]:
            cpp = stack.enter_context(CppRunner(runner, args.export, threads=args.threads, decode=mode))
            runtimes[f"C++ runner ({mode})"] = lambda ids, cpp=cpp: run_cpp(cpp, ids, args.new_tokens)
        runs, tokens, readings = measure(runtimes, prompt_ids, args.repeats, args.threads)
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    report_agreement(tokens)
    mean_new = statistics.mean(len(t) for t in tokens["transformers generate"])
    mean_position = statistics.mean(len(ids) for ids in prompt_ids) + mean_new / 2
    per_token = bytes_per_token(exported.manifest, mean_position)
    bandwidth = statistics.median(readings)
    print(f"\n{args.dtype}, {args.threads} thread(s): read bandwidth {bandwidth:.1f} GB/s (median of {len(readings)} "
          f"readings, {min(readings):.1f}-{max(readings):.1f}), {per_token / 1e6:.0f} MB read per decoded token -> "
          f"bound {bandwidth * 1e9 / per_token:.1f} tokens/s at the median")
    print_table({name: summarize(r, per_token) for name, r in runs.items()}, mean_new)


if __name__ == "__main__":
    main()
