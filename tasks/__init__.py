"""Prefect tasks, one module per stage: config -> cache key -> core call -> artifact -> MLflow."""
