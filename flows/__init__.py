"""Prefect flows: the order of stages and their parameters, nothing else."""
