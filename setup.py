"""The C extensions, each the twin of a pure-Python reference it is tested
against: ``tokens._mac0`` (the per-request Mac0 proof check,
``tokens/_mac0.c``), ``tokens._window`` (the replay window,
``tokens/_window.c``), ``gateway._bucket`` (the rate limits' token
bucket, ``gateway/_bucket.c``), ``gateway._admission`` (the one-step
authorization path, ``gateway/_admission.c``) and ``gateway.dtls._codec`` (a CoAP message's
options, ``gateway/dtls/_codec.c``). Everything else is in pyproject.toml."""

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
        Extension("gateway._bucket", ["gateway/_bucket.c"], extra_compile_args=_FLAGS),
        Extension("gateway._admission", ["gateway/_admission.c"], extra_compile_args=_FLAGS),
        Extension("gateway.dtls._codec", ["gateway/dtls/_codec.c"], extra_compile_args=_FLAGS),
    ]
)
