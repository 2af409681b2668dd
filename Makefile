# The two commands a new machine needs: `make run` and `make test`.
# Both install their own prerequisites (Debian packages and a .venv).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEB_PKGS := autoconf automake libtool gcc libssl-dev python3-dev python3-venv libcoap3-bin openssl make pkg-config libcoap3-dev clang gcc-arm-none-eabi libnewlib-arm-none-eabi libmbedtls-dev prometheus iproute2 postgresql nginx-light libnginx-mod-stream
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest deps venv bench clean

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml setup.py tokens/_mac0.c tokens/_window.c gateway/resource_server/_bucket.c gateway/dtls/_codec.c | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# DTLSSocket (tinydtls inside) rebuilt from its sdist with the stack protector
# and _FORTIFY_SOURCE (its setup.py adds neither); see docs/decisions.md.
DTLS_CFLAGS := -O2 -fstack-protector-strong -D_FORTIFY_SOURCE=2
DTLS_STAMP  := $(VENV)/.dtlssocket-hardened

$(DTLS_STAMP): $(STAMP) Makefile
	CFLAGS="$(DTLS_CFLAGS)" $(PY) -m pip install -q --no-cache-dir --no-deps --force-reinstall \
	  --no-binary DTLSSocket "DTLSSocket==$$($(PY) -c 'from importlib.metadata import version; print(version("DTLSSocket"))')"
	touch $(DTLS_STAMP)

venv: deps $(STAMP) $(DTLS_STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy tokens

pytest: venv
	$(VENV)/bin/pytest

test: venv lint typecheck pytest

run: venv
	$(PY) -m examples.demo

# Every bench/ script in one go (about 3 minutes on 2 cores; TINY=1: 30 s),
# results in bench/results/<date>.json and .md (see BENCHMARKS.md).
bench: venv
	$(PY) -m bench.run_all $(if $(TINY),--tiny)

bench-tiny: venv
	$(PY) -m bench.run_all --tiny

# 10,000 simulated devices at a low steady rate for DURATION (e.g. 30m, 2h):
# gateway memory over time, error rate, p99 drift. Not part of CI.
DURATION ?= 30m
soak: venv
	@mkdir -p bench/results
	$(PY) -m bench.soak --duration $(DURATION) --json bench/results/soak-$$(date +%Y-%m-%d).json

.PHONY: bench-tiny soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
