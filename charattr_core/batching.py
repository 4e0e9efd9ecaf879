"""Small helpers for streaming stages over batches."""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of at most `size` items, streaming (never materialises `items`)."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
