"""The stages, one module each: its CONFIG, the data it `reads` (part of its key, by content), how it `produce`s its
artifact and how its model is scored (SCORE). A stage's code identity is the set of project modules its module
imports, so a stage module imports what its producer runs and nothing of the machinery that runs it
(sqlcopilot_core.stage).

    python -m sqlcopilot_core.identity sqlcopilot_core.stages.finetune    # the modules finetune's key covers
"""


def training_metrics(stats: dict) -> dict:
    """The numeric statistics of a training stage (finetune, distill), named train_*."""
    return {(k if k.startswith("train_") else f"train_{k}"): v for k, v in stats.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
