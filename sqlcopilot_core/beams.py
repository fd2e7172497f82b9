"""Beam decoding over a shared prompt, and the execution-guided choice among its candidates.

    python -m sqlcopilot_core.beams MODEL_DIR DB_PATH "how many singers are there?" [--num-beams 4] [--constrained]

`beam_search` is the bookkeeping alone, written so the C++ runner (cpp/src/beams.cpp) can follow it to the token:

- logprobs are the float32 log_softmax of a step's float32 logits; a beam's score is the float64 sum of its tokens'
  logprobs.
- start: one live beam (no tokens, score 0) whose logprobs are the prompt's last position.
- each step: the candidates (beam i, token t, score_i + lp[i][t]) of every live beam are walked by score descending,
  ties by the flat index i * V + t ascending. `allow(i, t)` (the schema constraint) may reject one: it is skipped.
  An accepted candidate whose token is end-of-text is a finished hypothesis (its tokens, end-of-text excluded); one
  whose token is a stop id, or that reaches max_new_tokens, is a finished hypothesis with that token; any other is a
  new live beam (parent i). The walk ends when num_beams new live beams are collected or the candidates run out.
- decoding ends when num_beams hypotheses have finished, no beam is live, or max_new_tokens is reached.
- the result: finished hypotheses by score / max(1, len(tokens)) descending (ties: the order they finished), at most
  num_beams of them.

num_beams = 1 without a constraint is greedy decoding.

The prompt is computed once; its key/value cache becomes the beams' when the first step expands it to their
number (`HFStepper`). `choose_runnable` runs the candidates in the read-only sandbox, best first, and keeps the
first one that executes (LEVER's "most probable executable"; RESDSQL and CodeS decode the same way).
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

Allow = Callable[[int, int], bool]


@dataclass(frozen=True)
class Candidate:
    tokens: tuple[int, ...]
    score: float
    """Sum of the tokens' log-probabilities (float64)."""

    @property
    def normalized(self) -> float:
        return self.score / max(1, len(self.tokens))


@dataclass
class _Beam:
    tokens: list[int]
    score: float
    state: object = None  # the constraint's state after these tokens


def _walk(logprobs: torch.Tensor, scores: list[float], want: int):
    """Candidates (beam, token, score) in the spec's order: score descending, then flat index ascending.

    Takes the top k first and widens it (x4) only when the caller walks past it, so a constrained walk that rejects
    many candidates still sees them in the order a full sort gives.
    """
    vocab = logprobs.shape[1]
    total = (logprobs.double() + torch.tensor(scores, dtype=torch.float64)[:, None]).reshape(-1)
    n = total.numel()
    k, emitted = min(2 * want, n), 0
    while True:
        values, index = torch.topk(total, k, sorted=True)
        cut = float(values[-1])
        if k < n:
            # entries above the k-th value are all in the top k; those equal to it may lie beyond: take them all
            above = [(v, i) for v, i in zip(values.tolist(), index.tolist()) if v > cut]
            ties = [(cut, i) for i in (total == cut).nonzero().flatten().tolist()]
            ordered = sorted(above, key=lambda p: (-p[0], p[1])) + ties
        else:
            ordered = sorted(zip(values.tolist(), index.tolist()), key=lambda p: (-p[0], p[1]))
        for value, flat in ordered[emitted:]:
            yield flat // vocab, flat % vocab, value
        emitted = len(ordered)
        if k >= n:
            return
        k = min(4 * k, n)


def beam_search(first_logits: torch.Tensor, step: Callable[[list[int], list[int]], torch.Tensor], num_beams: int,
                max_new_tokens: int, eos_id: int | None, stop_ids: frozenset[int] = frozenset(),
                constraint=None) -> list[Candidate]:
    """Candidates best first (see the module docstring for the exact rule).

    `first_logits` [1, V]: the prompt's last position. `step(tokens, parents)` feeds `tokens[j]` to a copy of live
    beam `parents[j]`'s cache (the caller reorders its caches) and returns the next logits [len(tokens), V].
    `constraint`: an object with `start()` -> state and `advance(state, token)` -> new state or None (rejected).
    """
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"beam_search: num_beams ({num_beams}) and max_new_tokens ({max_new_tokens}) must be >= 1")
    live = [_Beam([], 0.0, constraint.start() if constraint is not None else None)]
    logprobs = first_logits.float().log_softmax(-1)
    finished: list[Candidate] = []
    for length in range(1, max_new_tokens + 1):
        chosen: list[_Beam] = []
        parents: list[int] = []
        for beam, token, score in _walk(logprobs, [b.score for b in live], num_beams):
            state = None
            if constraint is not None:
                state = constraint.advance(live[beam].state, token)
                if state is None:
                    continue
            tokens = live[beam].tokens
            if eos_id is not None and token == eos_id:
                finished.append(Candidate(tuple(tokens), score))
            elif token in stop_ids or length == max_new_tokens:
                finished.append(Candidate(tuple(tokens) + (token,), score))
            else:
                chosen.append(_Beam(tokens + [token], score, state))
                parents.append(beam)
                if len(chosen) == num_beams:
                    break
        if len(finished) >= num_beams or not chosen:
            break
        live = chosen
        logprobs = step([b.tokens[-1] for b in live], parents).float().log_softmax(-1)
    ranked = sorted(range(len(finished)), key=lambda j: (-finished[j].normalized, j))
    return [finished[j] for j in ranked[:num_beams]]


class HFStepper:
    """Steps a transformers causal LM for beam_search: the prompt's cache is computed once (optionally on top of a
    cached schema prefix) and reordered by parent each step."""

    def __init__(self, model, prompt_ids: Sequence[int], prefix_cache=None, prefix_len: int = 0):
        device = next(model.parameters()).device
        self.model = model
        rest = list(prompt_ids[prefix_len:])
        if not rest:
            raise ValueError("HFStepper: the prompt needs at least one token after its cached prefix")
        cache = copy.deepcopy(prefix_cache) if prefix_cache is not None else None
        ids = torch.tensor([rest], device=device)
        positions = torch.arange(prefix_len, len(prompt_ids), device=device)[None]
        out = model(input_ids=ids, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.cache, self.first_logits, self.length = out.past_key_values, out.logits[:, -1], len(prompt_ids)
        self.rows = 1

    def __call__(self, tokens: list[int], parents: list[int]) -> torch.Tensor:
        device = self.first_logits.device
        if parents != list(range(self.rows)):
            self.cache.reorder_cache(torch.tensor(parents, device=device))
        self.rows = len(tokens)
        ids = torch.tensor(tokens, device=device)[:, None]
        positions = torch.full((len(tokens), 1), self.length, device=device)
        self.length += 1
        return self.model(input_ids=ids, position_ids=positions, past_key_values=self.cache, use_cache=True).logits[:, -1]


def prefix_cache(model, prefix_ids: Sequence[int]):
    """The key/value cache of a schema prefix, to be shared by every question about that database."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(input_ids=torch.tensor([list(prefix_ids)], device=device), use_cache=True,
                     logits_to_keep=1).past_key_values


@torch.inference_mode()
def hf_beam_generate(model, prompt_ids: Sequence[int], num_beams: int, max_new_tokens: int, eos_id: int | None,
                     stop_ids: frozenset[int] = frozenset(), constraint=None, prefix=None) -> list[Candidate]:
    """beam_search on a transformers model; `prefix`: (cache, length) of a shared schema prefix of prompt_ids."""
    cache, length = prefix if prefix is not None else (None, 0)
    stepper = HFStepper(model, prompt_ids, cache, length)
    return beam_search(stepper.first_logits, stepper, num_beams, max_new_tokens, eos_id, stop_ids, constraint)


NO_CONSTRAINED_CANDIDATE = ("the schema constraint ended every beam before a statement was complete: "
                            "decoded again without it")


def decode_with_fallback(decode, constrained: bool):
    """`decode(constrained) -> (candidates, extra)`, once; when the constrained search ends with no candidate at all
    (every beam reached a token the constraint refuses), once more without the constraint, so the answer is still
    SQL to show, try and explain (its error says why it fails). Returns (candidates, extra, note or None); after a
    fallback `extra` is the second search's, with the first one's under `constrained_<key>`."""
    candidates, extra = decode(constrained)
    if constrained and not candidates:
        candidates, again = decode(False)
        return candidates, {**again, **{f"constrained_{key}": value for key, value in extra.items()}}, \
            NO_CONSTRAINED_CANDIDATE
    return candidates, extra, None


# --- the execution-guided choice ------------------------------------------------------------------------------


@dataclass
class Choice:
    """The answer picked among a question's candidates, and why the ones before it were not."""

    sql: str
    index: int
    """Rank of the chosen candidate (0 = most probable)."""
    tried: int
    rejected: list[dict] = field(default_factory=list)
    """One entry per candidate tried and not chosen: {"index", "sql", "reason"}."""
    error: str | None = None
    """Set when no candidate ran: the top candidate's error."""
    cut_from: str | None = None
    """Set when the answer is a shorter statement inside candidate `index`, which the token limit cut off."""

    def as_dict(self) -> dict:
        return {"sql": self.sql, "index": self.index, "tried": self.tried, "rejected": self.rejected,
                "error": self.error, "cut_from": self.cut_from}


CUT_BEFORE = frozenset({"AND", "OR", "JOIN", "ON", "WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "OFFSET",
                        "UNION", "INTERSECT", "EXCEPT", "SELECT"})
"""The words a clause or a condition starts with: a cut-off candidate is cut just before one of them, so that no
condition is left half written (`... AND age` runs in SQLite, as a truth test of age). Never before FROM: a query
without its FROM (`SELECT count(*)`, `... IN (SELECT age)`) runs and answers another question."""


def statement_cuts(sql: str, limit: int = 64) -> list[str]:
    """The statements a candidate cut off at the token limit may still hold, longest first, at most `limit`: its
    text before each clause or condition (`CUT_BEFORE`, outside quotes), with the parentheses it leaves open
    closed. A beam that loops (`... WHERE y = 2014 AND y = 2014 AND y =`) or that ran past its query
    (`... LIMIT 1 SELECT ...`) wrote the query it meant before the loop."""
    boundaries: list[tuple[int, int]] = []
    depth, quote = 0, None
    for pos, char in enumerate(sql):
        if quote:
            if char == quote:
                quote = None  # a doubled quote ('') closes and opens again
            continue
        if char in "'\"`":
            quote = char
        elif char == "[":
            quote = "]"
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char.isspace() and pos and not sql[pos - 1].isspace():
            following = sql[pos:].split(None, 1)
            if following and following[0].upper() in CUT_BEFORE:
                boundaries.append((pos, depth))
    cuts: list[str] = []
    for pos, open_parens in reversed(boundaries):
        text = sql[:pos].rstrip() + ")" * open_parens
        if text not in cuts and has_sql_words(text):
            cuts.append(text)
        if len(cuts) >= limit:
            break
    return cuts


def has_sql_words(text: str) -> bool:
    """A cut worth running: a SELECT and something after it."""
    words = text.split()
    return len(words) >= 2 and words[0].upper() in ("SELECT", "WITH")


def choose_runnable(sqls: Sequence[str], db_path, *, timeout_s: float = 2.0, prefer_nonempty: bool = False,
                    max_rows: int = 1000, cut_off: Sequence[bool] | None = None, max_cuts: int = 64) -> Choice:
    """The first of `sqls` (best first) that executes without error in the read-only sandbox; with
    `prefer_nonempty` the first that returns rows, else the first that runs. When none runs, the candidates the
    token limit cut off (`cut_off[i]`) are tried shortened (`statement_cuts`, longest first, at most `max_cuts`
    each, best candidate first): the first cut that runs is the answer, with `cut_from` set. If nothing runs: the
    first candidate, with its error."""
    from sqlcopilot_core.sqlexec import execute_readonly

    if not sqls:
        raise ValueError("choose_runnable: no candidates")
    rejected: list[dict] = []
    first_runs: int | None = None
    seen: dict[str, str | None] = {}

    def outcome(sql: str) -> str | None:
        if sql not in seen:  # the same statement from another beam: same outcome
            result = execute_readonly(db_path, sql, timeout_s=timeout_s, max_rows=max_rows)
            reason = None if result.ok else f"{result.error_kind}: {result.error}"
            if reason is None and prefer_nonempty and not result.rows:
                reason = "empty result"
            seen[sql] = reason
        return seen[sql]

    for index, sql in enumerate(sqls):
        reason = outcome(sql)
        if reason is None:
            return Choice(sql, index, index + 1, rejected)
        if reason == "empty result" and first_runs is None:
            first_runs = index
        rejected.append({"index": index, "sql": sql, "reason": reason})
    if first_runs is not None:
        return Choice(sqls[first_runs], first_runs, len(sqls), [r for r in rejected if r["index"] != first_runs])
    for index, sql in enumerate(sqls):
        if cut_off is not None and cut_off[index]:
            for cut in statement_cuts(sql, max_cuts):
                if outcome(cut) in (None, "empty result"):
                    return Choice(cut, index, len(sqls), [r for r in rejected if r["index"] != index],
                                  cut_from=sql)
    return Choice(sqls[0], 0, len(sqls), rejected[1:], error=rejected[0]["reason"])


def mark_retried(answer: dict, first: dict, num_beams: int, timing: dict | None = None) -> None:
    """Record on `answer` (a second search's) why it was made: the first search's error and candidates (and, from
    the C++ runner, its timing). The C++ copilot and the Python scorer both use it."""
    answer["retried"] = {"num_beams": num_beams, "first_error": first["error"],
                         "first_candidates": first["candidate_sqls"]}
    if timing is not None:
        answer["retried"]["first_timing"] = {key: first.get(key) for key in timing}


def answer_from_candidates(candidates: Sequence[Candidate], tokenizer, db_path, guided: bool, *,
                           timeout_s: float = 2.0, prefer_nonempty: bool = False,
                           max_new_tokens: int | None = None) -> dict:
    """One answer from a question's candidates (best first): {"sql", "candidates", "candidate_sqls", "cut_off"},
    and for the guided choice also {"chosen", "tried", "rejected", "error", "cut_from"}. A candidate with
    `max_new_tokens` tokens was cut off by the limit: the guided choice may answer with a statement inside it
    (`choose_runnable`). The Python scorer and the C++ copilot both use it."""
    from sqlcopilot_core.generate import statement_end_ids
    from sqlcopilot_core.prompting import extract_sql

    sqls = [extract_sql(tokenizer.decode(c.tokens, skip_special_tokens=True)) for c in candidates] or [""]
    stop_ids = statement_end_ids(tokenizer) if max_new_tokens is not None else frozenset()
    # cut off: the limit came before the statement ended (a statement that ended on the last token is whole)
    cut_off = [max_new_tokens is not None and len(c.tokens) >= max_new_tokens and c.tokens[-1] not in stop_ids
               for c in candidates] or [False]
    answer = {"sql": sqls[0], "candidates": len(candidates), "candidate_sqls": sqls, "cut_off": cut_off}
    if guided:
        choice = choose_runnable(sqls, db_path, timeout_s=timeout_s, prefer_nonempty=prefer_nonempty,
                                 cut_off=cut_off)
        answer.update(sql=choice.sql, chosen=choice.index, tried=choice.tried, rejected=choice.rejected,
                      error=choice.error, cut_from=choice.cut_from)
    return answer


def _main(argv: list[str] | None = None) -> None:
    from sqlcopilot_core.generate import statement_end_ids
    from sqlcopilot_core.modeling import load_model
    from sqlcopilot_core.prompting import Prompter, extract_sql, model_prompt_settings
    from sqlcopilot_core.sqlconstraint import SchemaConstraint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("db")
    parser.add_argument("question")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--constrained", action="store_true")
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model)
    model.eval()
    ids = Prompter(model_prompt_settings(args.model), tokenizer).ids(args.db, args.question)
    constraint = SchemaConstraint.for_database(args.db, tokenizer) if args.constrained else None
    candidates = hf_beam_generate(model, ids, args.num_beams, args.max_new_tokens, tokenizer.eos_token_id,
                                  statement_end_ids(tokenizer), constraint)
    sqls = [extract_sql(tokenizer.decode(c.tokens, skip_special_tokens=True)) for c in candidates]
    choice = choose_runnable(sqls, args.db)
    print(json.dumps({"candidates": [{"sql": s, "score": c.score, "normalized": c.normalized}
                                     for s, c in zip(sqls, candidates)], "choice": choice.as_dict()}, indent=1))


if __name__ == "__main__":
    _main()
