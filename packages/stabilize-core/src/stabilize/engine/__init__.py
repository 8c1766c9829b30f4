"""The engine: graph checks and the pure transition functions."""
