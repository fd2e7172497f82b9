"""Prefect tasks, one module per stage: a thin @task (name, retries, logging) around sqlcopilot_core.stage.run."""


def logger():
    """Prefect's run logger inside a run, a plain logger outside (tasks are also called through .fn())."""
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("sqlcopilot")
