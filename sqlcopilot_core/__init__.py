"""SQL-Copilot core library: plain Python and PyTorch, never Prefect.

    python -c "import sqlcopilot_core; print(sqlcopilot_core.__version__)"
"""

__version__ = "0.1.0"
