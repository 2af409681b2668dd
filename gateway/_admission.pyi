from typing import Any

class Admission:
    def __init__(
        self,
        verifier: Any,
        windows: Any,
        kid: bytes,
        limiter: Any,
        client_id: str,
        rate: float | None,
        masks: dict[tuple[str, ...], int],
    ) -> None: ...
    def admit(
        self,
        option_value: bytes,
        code: int,
        path: tuple[str, ...],
        options: Any,
        payload: bytes,
        now: float,
    ) -> float | None: ...
