"""The one prompt every stage, the predictor and the C++ copilot share, and the settings a model carries with it.

    python -m sqlcopilot_core.prompting ../shared/spider/database/concert_singer/concert_singer.sqlite "how many singers?"

A prompt is two parts: a prefix (the database's schema, shown whole when it fits the budget, else filtered by
relevance to the question: schema_prompt.SchemaPrompter) and a branch (cell values the question mentions, the
question, the answer cue). Training packs several branches after one prefix (sqlcopilot_core/packing.py); to give
the model at run time exactly the tokens it was trained on, the two parts are tokenized separately and their ids
concatenated (Prompter.ids), everywhere.

A trained model folder holds prompt.json, the PromptSettings it was trained with; scoring, predict, ask and the
export read them from there (model_prompt_settings), and a caller that overrides them is told how they differ.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path

from sqlcopilot_core.schema_prompt import PromptSettings, SchemaPrompter

PREFIX_TEMPLATE = "-- SQLite database schema\n{schema}\n"
BRANCH_TEMPLATE = "{hints}-- Question: {question}\n-- SQLite query answering the question:\n"
PROMPT_FILE = "prompt.json"
# What models trained before prompt.json existed were trained with: CREATE TABLE text, trailing tables dropped.
LEGACY_SETTINGS = PromptSettings(form="create_table", max_schema_tokens=400, value_hints=0)

__all__ = ["PromptSettings", "Prompter", "build_prompt", "extract_sql", "example_prompt", "model_prompt_settings",
           "write_prompt_settings"]


def prompt_parts(schema_text: str, question: str, hints: str = "") -> tuple[str, str]:
    """(prefix, branch): the schema block, then value hints + question + the cue after which SQL is written."""
    return (PREFIX_TEMPLATE.format(schema=schema_text.strip()),
            BRANCH_TEMPLATE.format(hints=hints, question=" ".join(question.split())))


def build_prompt(schema_text: str, question: str, hints: str = "") -> str:
    """The prompt as one string (what a reader sees; the model gets Prompter.ids)."""
    return "".join(prompt_parts(schema_text, question, hints))


def extract_sql(generated: str) -> str:
    """The first statement of a generation: cut at the first ';' or blank line, whitespace collapsed."""
    text = generated.strip()
    for stop in (";", "\n\n", "\n--"):
        cut = text.find(stop)
        if cut != -1:
            text = text[:cut]
    return " ".join(text.split())


class Prompter:
    """Prompts of questions about databases under one PromptSettings; schemas and their token ids are cached."""

    def __init__(self, settings: PromptSettings, tokenizer=None):
        self.settings, self.tokenizer = settings, tokenizer
        self.schema = SchemaPrompter(settings, tokenizer)
        self._prefix_ids: dict[str, list[int]] = {}

    def parts(self, db_path, question: str) -> tuple[str, str]:
        return prompt_parts(self.schema.schema_text(Path(db_path), question), question,
                            self.schema.value_hints(Path(db_path), question))

    def text(self, db_path, question: str) -> str:
        return "".join(self.parts(db_path, question))

    def ids(self, db_path, question: str) -> list[int]:
        """Token ids of the prompt: prefix and branch tokenized apart, exactly as training packs them."""
        prefix, branch = self.split_ids(db_path, question)
        return prefix + branch

    def split_ids(self, db_path, question: str) -> tuple[list[int], list[int]]:
        """(prefix ids, branch ids): questions about one database whose schema is shown whole share the prefix, so
        its key/value cache can be computed once for all of them."""
        if self.tokenizer is None:
            raise ValueError("Prompter.ids needs a tokenizer")
        prefix, branch = self.parts(db_path, question)
        if prefix not in self._prefix_ids:
            self._prefix_ids[prefix] = self.tokenizer(prefix).input_ids
        return list(self._prefix_ids[prefix]), self.tokenizer(branch, add_special_tokens=False).input_ids


def example_prompt(db_path, question: str, settings: PromptSettings | None = None, tokenizer=None) -> str:
    """The full prompt text for one question about the database at `db_path`."""
    return Prompter(settings or PromptSettings(), tokenizer).text(db_path, question)


def write_prompt_settings(model_dir: str | Path, settings: PromptSettings) -> Path:
    path = Path(model_dir) / PROMPT_FILE
    path.write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")
    return path


def model_prompt_settings(model_dir: str | Path, override: PromptSettings | None = None,
                          where: str = "prompt") -> PromptSettings:
    """The prompt settings a model was trained with (its prompt.json; models older than it get LEGACY_SETTINGS).

    An `override` wins, with a warning naming every setting that differs from the model's own.
    """
    path = Path(model_dir) / PROMPT_FILE
    if path.is_file():
        try:
            recorded = PromptSettings(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid prompt settings file ({exc})") from None
    else:
        recorded = LEGACY_SETTINGS
    if override is None or override == recorded:
        return recorded
    differ = {k: (getattr(recorded, k), v) for k, v in dataclasses.asdict(override).items()
              if getattr(recorded, k) != v}
    warnings.warn(f"{where}: prompt settings differ from the ones {model_dir} was trained with: "
                  + ", ".join(f"{k} {a!r} (model) -> {b!r} (given)" for k, (a, b) in differ.items()), stacklevel=2)
    return override


if __name__ == "__main__":
    print(example_prompt(sys.argv[1], " ".join(sys.argv[2:]) or "how many rows?"))
