"""The one prompt format every stage, the predictor and the C++ copilot share.

    python -c "from sqlcopilot_core.prompting import build_prompt; print(build_prompt('CREATE TABLE t(a)', 'how many?'))"
"""

from __future__ import annotations

PROMPT_TEMPLATE = "-- SQLite database schema\n{schema}\n-- Question: {question}\n-- SQLite query answering the question:\n"


def build_prompt(schema_text: str, question: str) -> str:
    """Schema, then question, then the cue after which the model writes one SQL statement."""
    return PROMPT_TEMPLATE.format(schema=schema_text.strip(), question=" ".join(question.split()))


def extract_sql(generated: str) -> str:
    """The first statement of a generation: cut at the first ';' or blank line, whitespace collapsed."""
    text = generated.strip()
    for stop in (";", "\n\n", "\n--"):
        cut = text.find(stop)
        if cut != -1:
            text = text[:cut]
    return " ".join(text.split())


def example_prompt(db_path, question: str, *, values_per_column: int = 0, max_schema_tokens: int | None = None,
                   tokenizer=None) -> str:
    """The full prompt for a question about the database at `db_path` (schema serialized within its budget)."""
    from sqlcopilot_core.spider import serialize_schema

    count = (lambda text: len(tokenizer(text).input_ids)) if tokenizer is not None else None
    schema = serialize_schema(db_path, values_per_column=values_per_column, max_tokens=max_schema_tokens,
                              count_tokens=count)
    return build_prompt(schema, question)
