"""A small HTTP service to put behind the gateway's proxy (``make run``, the
proxy tests): a thermometer, a readings collection, a large document and an
endpoint that checks the per-device JWT the gateway mints.

=========================  ==================================================
``GET /temp``              ``{"celsius": ...}`` with an ETag and
                           ``Cache-Control: max-age=5``; 304 on a matching
                           If-None-Match
``PUT /temp``              JSON ``{"celsius": number}``; honours If-Match
                           (412); 204 with the new ETag
``POST /readings``         any JSON; 201 with ``Location: /readings/<n>``
``GET /readings/<n>``      the stored reading, or 404
``GET /big?size=N``        N bytes of application/octet-stream (default
                           256 KiB, at most 16 MiB)
``GET /me``                verifies ``Authorization: Bearer <JWT>`` (ES256 or
                           RS256 with the configured public key and
                           audience): 200 ``{"sub", "scope"}`` or 401
=========================  ==================================================

Run: ``python -m examples.demo_upstream --port 8080 [--jwt-public-key
pub.pem --jwt-audience AUD]``. JWT checking uses PyJWT (an independent JOSE
implementation, installed with the ``test`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from aiohttp import web

DEFAULT_BIG = 256 * 1024
MAX_BIG = 16 * 1024 * 1024

_STATE = web.AppKey("state", dict)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        content_type="application/json",
        headers=headers,
    )


def _etag(state: dict[str, Any]) -> str:
    return f'"t{state["version"]}"'


def _tags(header: str | None) -> list[str]:
    return [t.strip() for t in (header or "").split(",") if t.strip()]


async def get_temp(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    etag = _etag(state)
    if etag in _tags(request.headers.get("If-None-Match")):
        return web.Response(status=304, headers={"ETag": etag, "Cache-Control": "max-age=5"})
    return _json(
        {"celsius": state["celsius"]}, headers={"ETag": etag, "Cache-Control": "max-age=5"}
    )


async def put_temp(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    if_match = _tags(request.headers.get("If-Match"))
    if if_match and "*" not in if_match and _etag(state) not in if_match:
        return web.Response(status=412)
    try:
        data = json.loads(await request.read())
        celsius = float(data["celsius"])
    except (ValueError, KeyError, TypeError):
        return web.Response(status=400, text='expected {"celsius": number}')
    state["celsius"] = celsius
    state["version"] += 1
    return web.Response(status=204, headers={"ETag": _etag(state)})


async def post_reading(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return web.Response(status=415)
    try:
        reading = json.loads(await request.read())
    except ValueError:
        return web.Response(status=400, text="not JSON")
    readings = request.app[_STATE]["readings"]
    readings.append(reading)
    n = len(readings)
    return _json({"id": n}, status=201, headers={"Location": f"/readings/{n}"})


async def get_reading(request: web.Request) -> web.Response:
    readings = request.app[_STATE]["readings"]
    try:
        n = int(request.match_info["n"])
        return _json(readings[n - 1]) if n >= 1 else web.Response(status=404)
    except (ValueError, IndexError):
        return web.Response(status=404)


async def get_big(request: web.Request) -> web.Response:
    try:
        size = min(int(request.query.get("size", DEFAULT_BIG)), MAX_BIG)
    except ValueError:
        return web.Response(status=400)
    body = bytes(i % 251 for i in range(size))
    return web.Response(body=body, content_type="application/octet-stream")


async def get_me(request: web.Request) -> web.Response:
    key = request.app[_STATE]["jwt_key"]
    if key is None:
        return web.Response(status=501, text="start with --jwt-public-key")
    import jwt  # PyJWT: only needed when JWT checking is on

    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = jwt.decode(
            auth[7:],
            key,
            algorithms=["ES256", "RS256"],
            audience=request.app[_STATE]["jwt_audience"],
            options={"require": ["exp", "iat", "sub", "aud"]},
        )
    except jwt.PyJWTError:
        return web.Response(
            status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return _json({"sub": claims["sub"], "scope": claims.get("scope", "")})


def create_app(
    *, jwt_public_key: bytes | None = None, jwt_audience: str | None = None
) -> web.Application:
    """The demo service. ``jwt_public_key`` (PEM) enables ``GET /me``."""
    app = web.Application(client_max_size=1024 * 1024)
    app[_STATE] = {
        "celsius": 21.5,
        "version": 1,
        "readings": [],
        "jwt_key": jwt_public_key,
        "jwt_audience": jwt_audience,
    }
    app.router.add_get("/temp", get_temp)
    app.router.add_put("/temp", put_temp)
    app.router.add_post("/readings", post_reading)
    app.router.add_get("/readings/{n}", get_reading)
    app.router.add_get("/big", get_big)
    app.router.add_get("/me", get_me)
    return app


async def start(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve ``app``; returns the runner (``await runner.cleanup()`` stops it)
    and the base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{shown}:{bound_port}"


async def _serve(args: argparse.Namespace) -> None:
    key = None
    if args.jwt_public_key:
        with open(args.jwt_public_key, "rb") as f:
            key = f.read()
    app = create_app(jwt_public_key=key, jwt_audience=args.jwt_audience)
    runner, url = await start(app, args.host, args.port)
    print(f"demo upstream on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--jwt-public-key", help="PEM public key that signs the gateway's JWTs")
    parser.add_argument("--jwt-audience", help="expected 'aud' of the JWTs")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
