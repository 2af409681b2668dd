"""The one C extension, ``tokens._mac0`` (the gateway's per-request Mac0
proof check; see ``tokens/_mac0.c``). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tokens._mac0",
            ["tokens/_mac0.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        )
    ]
)
