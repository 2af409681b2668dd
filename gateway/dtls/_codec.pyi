from collections.abc import Callable
from typing import Any

def parse_options(
    data: bytes,
    start: int,
    specs: dict[int, tuple[int, Any, Any]],
    spec_of: Callable[[int], tuple[int, Any, Any]],
) -> tuple[dict[Any, list[Any]], bytes]: ...
