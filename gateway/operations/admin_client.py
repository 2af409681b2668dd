"""The ``acegw`` side of the admin HTTP port (:mod:`.admin_http`): JSON
requests to the running gateway, with failures said plainly ("no answer
from 127.0.0.1:9100 (is acegw serve running?)", "refused: ...")."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from gateway.config import Config
from gateway.errors import ConfigError, GatewayError
from gateway.operations.admin_access import admin_token_path, read_admin_token

#: Seconds to wait for the gateway's answer.
TIMEOUT = 10.0


class NoAnswer(GatewayError):
    """Nothing listens on the admin port, or it did not answer in time."""


class AdminRefused(GatewayError):
    """The admin port answered with an error."""


class AdminClient:
    """Requests to one gateway's admin port (``[metrics] listen``)."""

    def __init__(self, config: Config, *, timeout: float = TIMEOUT) -> None:
        if not config.metrics.enabled:
            raise ConfigError(
                "the running gateway is reached through its HTTP port; [metrics] listen is off",
                key="metrics.listen",
            )
        host, port = config.metrics.host, config.metrics.port
        if host in ("0.0.0.0", "::"):  # listening everywhere: ask on loopback
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        self.where = f"{f'[{host}]' if ':' in host else host}:{port}"
        self.base = f"http://{self.where}"
        self.timeout = timeout
        self.token_file = admin_token_path(config)

    def get(self, path: str, **query: str | None) -> dict[str, Any]:
        params = {k: v for k, v in query.items() if v is not None}
        url = self.base + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        return self._send(urllib.request.Request(url))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        token = read_admin_token(self.token_file)
        if token is None:
            raise AdminRefused(
                f"cannot read the admin token {self.token_file} (run as the gateway's user, "
                "or 'acegw init' to create the state directory)"
            )
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read())["error"]
            except (ValueError, KeyError, TypeError):
                reason = exc.reason
            if exc.code == 404:
                reason = "this gateway does not serve it (an older acegw?)"
            raise AdminRefused(f"the gateway at {self.where} refused: {reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise NoAnswer(
                f"no answer from {self.where} (is acegw serve running? "
                f"{getattr(exc, 'reason', exc)})"
            ) from None
        try:
            answer = json.loads(data)
        except ValueError:
            raise AdminRefused(f"the gateway at {self.where} sent no JSON") from None
        if not isinstance(answer, dict):
            raise AdminRefused(f"the gateway at {self.where} sent an unexpected answer")
        return answer


__all__ = ["AdminClient", "AdminRefused", "NoAnswer"]
