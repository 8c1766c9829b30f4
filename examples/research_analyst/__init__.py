"""The research analyst: the README's "Complex" example, complete and runnable.

``uv run python -m examples.research_analyst`` (see README.md in this folder).
"""
