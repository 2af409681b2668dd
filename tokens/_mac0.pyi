from collections.abc import Callable
from typing import Any

_ShapeKey = tuple[int, tuple[str, ...], tuple[str, ...], int | None]

class MacCheck:
    def __init__(
        self,
        key: bytes,
        head: bytes,
        prefix: bytes,
        tag_head: bytes,
        tag_len: int,
        shapes: dict[_ShapeKey, bytes],
        make_shape: Callable[[_ShapeKey], bytes | None],
    ) -> None: ...
    def check_options(
        self, option_value: bytes, code: int, path: tuple[str, ...], options: Any, payload: bytes
    ) -> int | None: ...
