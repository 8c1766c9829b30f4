"""The agent team: coding agents write a library and its tests until the tests pass.

``uv run python -m examples.agent_team [--chaos]`` (see README.md in this folder).
"""
