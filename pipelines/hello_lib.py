"""Helpers called by the example pipelines (the pipeline's folder is on the import path)."""


def count_lines(lines: list[str]) -> int:
    return len(lines)
