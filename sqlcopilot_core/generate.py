"""Greedy generation for every stage that scores a model: batched, left-padded, KV-cached, deterministic.

    python -m sqlcopilot_core.generate work/smollm2_base ../shared/spider --limit 8 --out /tmp/preds.jsonl

The loop is written out (prefill, then one token per step from the cache) rather than calling `model.generate`:
it is as fast on a CPU, it never samples whatever the model's generation_config says, and it lets
`decode_tokens_per_s` time the decode steps alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sqlcopilot_core.prompting import Prompter, PromptSettings, extract_sql
from sqlcopilot_core.spider import Example


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) with every sequence right-aligned; positions start at 0 per row."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    # Positions follow the real tokens so a padded row sees the same rotary angles as the row alone.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def greedy_generate_ids(model, prompt_ids: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int,
                        stop_at_eos: bool = True, stop_ids: frozenset[int] = frozenset(),
                        prefix=None) -> list[list[int]]:
    """Greedy continuations (eos excluded) of one batch of token-id prompts, using the model's KV cache.

    A row also ends after a token of `stop_ids` (kept in its output): one that ends a statement, since only the
    first statement is used, so a model that never says end-of-text does not decode to the length limit.
    `prefix`: (cache, length) of a prefix every prompt starts with (beams.prefix_cache): only the rest of each
    prompt is computed; the rows are left-padded after the prefix, where the mask hides the padding.
    """
    cached, skip = prefix if prefix is not None else (None, 0)
    rest = [p[skip:] for p in prompt_ids]
    if any(not p for p in rest):
        raise ValueError("greedy_generate_ids: every prompt needs at least one token (after its cached prefix)")
    device = model_device(model)
    ids, mask, positions = (t.to(device) for t in left_pad(rest, pad_id))
    cache = None
    if cached is not None:
        cache = copy.deepcopy(cached)
        cache.reorder_cache(torch.zeros(len(rest), dtype=torch.long, device=device))
        mask = torch.cat([mask.new_ones((len(rest), skip)), mask], dim=1)
        positions = positions + skip
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    cache, outputs = out.past_key_values, [[] for _ in prompt_ids]
    done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        next_ids = out.logits[:, -1].argmax(-1)
        if stop_at_eos:
            done |= next_ids == eos_id
            if bool(done.all()):
                break
        for row in (~done).nonzero().flatten().tolist():
            outputs[row].append(int(next_ids[row]))
            if outputs[row][-1] in stop_ids:
                done[row] = True
        if stop_ids and bool(done.all()):
            break
        if step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones((len(prompt_ids), 1))], dim=1)
        positions = positions[:, -1:] + 1
        out = model(input_ids=next_ids[:, None], attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True)
    return outputs


def statement_end_ids(tokenizer) -> frozenset[int]:
    """Token ids whose text holds ';' or a blank line: where extract_sql cuts, so decoding further is wasted."""
    cached = getattr(tokenizer, "_sqlcopilot_stop_ids", None)
    if cached is None:
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        texts = [tokenizer.convert_tokens_to_string([p]) if p is not None else "" for p in pieces]
        cached = frozenset(i for i, text in enumerate(texts) if ";" in text or "\n\n" in text)
        tokenizer._sqlcopilot_stop_ids = cached
    return cached


def greedy_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 8,
                    progress=True) -> list[str]:
    """Decoded greedy continuations of token-id `prompts`, in input order; batches hold prompts of similar length."""
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"greedy_generate: batch_size ({batch_size}) and max_new_tokens ({max_new_tokens}) must "
                         f"be at least 1")
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    stop_ids = statement_end_ids(tokenizer)
    was_training = model.training
    model.eval()
    results: list[str] = [""] * len(prompts)
    try:
        with tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                continuations = greedy_generate_ids(model, [prompts[i] for i in chunk], max_new_tokens, eos_id,
                                                    pad_id, stop_ids=stop_ids)
                for i, tokens in zip(chunk, continuations):
                    results[i] = tokenizer.decode(tokens, skip_special_tokens=True)
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    return results


DECODINGS = ("greedy", "beam", "guided")


def check_decoding(decoding: str, num_beams: int, where: str, retry_beams: int = 0) -> None:
    if decoding not in DECODINGS:
        raise ValueError(f"{where}.decoding: {decoding!r} is not one of {', '.join(DECODINGS)}")
    if not 1 <= num_beams <= MAX_BEAMS:
        raise ValueError(f"{where}.num_beams: {num_beams} is not between 1 and {MAX_BEAMS}")
    if not isinstance(retry_beams, int) or not 0 <= retry_beams <= MAX_BEAMS:
        raise ValueError(f"{where}.retry_beams: {retry_beams!r} is not between 0 (no retry) and {MAX_BEAMS}")


def retry_width(decoding: str, num_beams: int, retry_beams: int) -> int:
    """Beams of the second search of a guided question none of whose candidates ran (0: no second search)."""
    return retry_beams if decoding == "guided" and retry_beams > num_beams else 0


MAX_BEAMS = 16


@dataclass(frozen=True)
class PredictConfig:
    """How a model answers Spider questions when it is scored."""

    prompt: PromptSettings = PromptSettings()
    """The prompt (schema form, budget, filter, value hints): the model's own, from its prompt.json."""
    max_new_tokens: int = 128
    """Longest SQL generated, in tokens."""
    batch_size: int = 8
    """Prompts generated together (left-padded)."""
    limit: int | None = None
    """Score only the first `limit` dev examples (None = all)."""
    decoding: str = "greedy"
    """greedy | beam (the most probable of num_beams candidates) | guided (the most probable candidate that
    executes in the read-only sandbox; sqlcopilot_core/beams.py)."""
    num_beams: int = 4
    """Beams of `beam` and `guided` decoding."""
    constrained: bool = False
    """Allow only tokens that can still make valid SQL over the database's names (sqlcopilot_core/sqlconstraint.py)."""
    prefer_nonempty: bool = False
    """guided: prefer the first candidate whose result has rows."""
    exec_timeout_s: float = 2.0
    """guided: time limit per candidate executed."""
    prefix_reuse: bool = True
    """Compute each database's schema prefix once and reuse its cache for every question about it."""
    retry_beams: int = 8
    """guided: a question none of whose candidates runs (not even cut short) is decoded once more with this many
    beams (0 or <= num_beams: never)."""

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"PredictConfig.max_new_tokens ({self.max_new_tokens}) and batch_size "
                             f"({self.batch_size}) must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"PredictConfig.limit must be >= 1 or None, got {self.limit}")
        check_decoding(self.decoding, self.num_beams, "PredictConfig", self.retry_beams)


def example_prompt_ids(examples: list[Example], settings: PromptSettings, tokenizer) -> list[list[int]]:
    """The prompt token ids of every example, exactly as training packs them (Prompter.ids)."""
    prompter = Prompter(settings, tokenizer)
    return [prompter.ids(e.db_path, e.question) for e in examples]


def predict_examples(model, tokenizer, examples: list[Example], config: PredictConfig, progress=True) -> list[str]:
    """One predicted SQL statement per example (the first `config.limit` examples when a limit is set)."""
    return [answer["sql"] for answer in predict_details(model, tokenizer, examples, config, progress)]


def predict_details(model, tokenizer, examples: list[Example], config: PredictConfig, progress=True) -> list[dict]:
    """Per example {"sql", and for beam/guided decoding "candidates", "tried", "rejected", "chosen", "error"}; a
    guided question none of whose candidates runs is decoded once more with `retry_beams` beams ("retried").

    Examples are grouped by their schema prefix: with `prefix_reuse` it is computed once per group and every
    question's prompt continues from its cache (the tokens are those of a full prefill: tests/core/test_beams.py).
    """
    from sqlcopilot_core.beams import (answer_from_candidates, decode_with_fallback, hf_beam_generate, mark_retried,
                                       prefix_cache)
    from sqlcopilot_core.sqlconstraint import SchemaConstraint

    chosen = examples[:config.limit] if config.limit is not None else examples
    prompter = Prompter(config.prompt, tokenizer)
    parts = [prompter.split_ids(e.db_path, e.question) for e in chosen]
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (prefix, _) in enumerate(parts):
        groups.setdefault(tuple(prefix), []).append(index)
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    stop_ids = statement_end_ids(tokenizer)
    beams = config.decoding != "greedy" or config.constrained
    constraints: dict[Path, SchemaConstraint] = {}
    answers: list[dict] = [{} for _ in chosen]
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(chosen), desc=f"generate ({config.decoding})", unit="prompt", disable=not progress) as bar:
            for prefix, members in groups.items():
                cache = (prefix_cache(model, prefix), len(prefix)) if config.prefix_reuse else None
                prompts = {i: list(prefix) + parts[i][1] for i in members}
                if not beams:
                    order = sorted(members, key=lambda i: -len(prompts[i]))
                    for start in range(0, len(order), config.batch_size):
                        chunk = order[start:start + config.batch_size]
                        with torch.inference_mode():
                            outs = greedy_generate_ids(model, [prompts[i] for i in chunk], config.max_new_tokens,
                                                       eos_id, pad_id, stop_ids=stop_ids, prefix=cache)
                        for i, tokens in zip(chunk, outs):
                            answers[i] = {"sql": extract_sql(tokenizer.decode(tokens, skip_special_tokens=True))}
                        bar.update(len(chunk))
                    continue
                for i in members:
                    db_path = chosen[i].db_path
                    constraint = None
                    if config.constrained:
                        if db_path not in constraints:
                            constraints[db_path] = SchemaConstraint.for_database(db_path, tokenizer)
                        constraint = constraints[db_path]
                    width = 1 if config.decoding == "greedy" else config.num_beams
                    retry = retry_width(config.decoding, width, config.retry_beams)
                    for search_width in (width, retry):
                        candidates, _, note = decode_with_fallback(
                            lambda constrained: (hf_beam_generate(model, prompts[i], search_width,
                                                                  config.max_new_tokens,
                                                                  eos_id, stop_ids,
                                                                  constraint if constrained else None,
                                                                  prefix=cache), {}), constraint is not None)
                        first = answers[i]
                        answers[i] = answer_from_candidates(candidates, tokenizer, db_path,
                                                            config.decoding == "guided",
                                                            timeout_s=config.exec_timeout_s,
                                                            prefer_nonempty=config.prefer_nonempty,
                                                            max_new_tokens=config.max_new_tokens)
                        if note:
                            answers[i]["fallback"] = note
                        if search_width != width:  # the second search (copilot.decode_prompts does the same)
                            mark_retried(answers[i], first, search_width)
                        if not retry or answers[i].get("error") is None:
                            break
                    bar.update(1)
    finally:
        model.train(was_training)
    return answers


def write_predictions_jsonl(path: str | Path, examples: list[Example], preds: list[str]) -> Path:
    """One JSON line {"db_id", "question", "pred"} per prediction, in example order (what the eval command reads)."""
    if len(preds) > len(examples):
        raise ValueError(f"{path}: {len(preds)} predictions for only {len(examples)} examples")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for example, pred in zip(examples, preds):
            handle.write(json.dumps({"db_id": example.db_id, "question": example.question, "pred": pred}) + "\n")
    return path


@torch.inference_mode()
def decode_tokens_per_s(model, tokenizer, prompt_ids: list[int], n_tokens: int = 64) -> float:
    """Greedy decode speed at batch size 1 after the prompt is in the cache (prefill excluded), tokens per second.

    Exactly `n_tokens` tokens are decoded whatever the model says (end-of-text does not stop it), after one short
    warm-up run, so models of any quality are timed on the same amount of work.
    """
    if n_tokens < 2:
        raise ValueError(f"decode_tokens_per_s: n_tokens must be >= 2, got {n_tokens}")
    ids = [list(prompt_ids)]
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id or 0
    was_training = model.training
    model.eval()
    try:
        greedy_generate_ids(model, ids, 2, eos_id, pad_id, stop_at_eos=False)
        # Two runs that differ only in decode steps: their time difference excludes prefill.
        start = time.perf_counter()
        greedy_generate_ids(model, ids, 1, eos_id, pad_id, stop_at_eos=False)
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        greedy_generate_ids(model, ids, n_tokens, eos_id, pad_id, stop_at_eos=False)
        total_s = time.perf_counter() - start
    finally:
        model.train(was_training)
    return (n_tokens - 1) / max(total_s - prefill_s, 1e-9)


def main(argv: list[str] | None = None) -> None:
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.spider import load_split

    parser = argparse.ArgumentParser(description="Greedy SQL predictions of a model folder on a Spider split.")
    parser.add_argument("model_dir")
    parser.add_argument("spider_dir")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="predictions.jsonl")
    args = parser.parse_args(argv)
    from sqlcopilot_core.prompting import model_prompt_settings

    model, tokenizer = load_model(args.model_dir)
    examples = load_split(args.spider_dir, args.split)
    config = PredictConfig(model_prompt_settings(args.model_dir), batch_size=args.batch_size, limit=args.limit)
    start = time.perf_counter()
    preds = predict_examples(model, tokenizer, examples, config)
    print(f"{len(preds)} predictions in {time.perf_counter() - start:.1f} s -> "
          f"{write_predictions_jsonl(args.out, examples, preds)}")


if __name__ == "__main__":
    main()
