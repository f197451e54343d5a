"""The functions behind map-reduce.yaml."""

from __future__ import annotations

from typing import Any


def split(text: str, chunks: int) -> list[dict[str, Any]]:
    words = text.split()
    size = max(1, -(-len(words) // chunks))
    return [{"index": i, "words": words[i * size : (i + 1) * size]} for i in range(chunks)]


def count_words(words: list[str]) -> int:
    return len(words)


def add(counts: list[int]) -> int:
    return sum(counts)
