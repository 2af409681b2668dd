"""The C extensions, each the twin of a pure-Python reference it is tested
against: ``tokens._mac0`` (the per-request Mac0 proof check,
``tokens/_mac0.c``), ``tokens._window`` (the replay window,
``tokens/_window.c``), ``gateway.resource_server._bucket`` (the rate
limits' token bucket) and ``gateway.dtls._codec`` (a CoAP message's
options); :mod:`gateway.native` says which runs. Everything else is in
pyproject.toml."""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-Wall", "-Werror=implicit-function-declaration"]

setup(
    ext_modules=[
        Extension(
            "tokens._mac0",
            ["tokens/_mac0.c"],
            libraries=["crypto"],
            extra_compile_args=_FLAGS,
        ),
        Extension("tokens._window", ["tokens/_window.c"], extra_compile_args=_FLAGS),
        Extension(
            "gateway.resource_server._bucket",
            ["gateway/resource_server/_bucket.c"],
            extra_compile_args=_FLAGS,
        ),
        Extension("gateway.dtls._codec", ["gateway/dtls/_codec.c"], extra_compile_args=_FLAGS),
    ]
)
