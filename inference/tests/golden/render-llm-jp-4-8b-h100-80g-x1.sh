# API key: export VLLM_API_KEY=<key> first (vLLM reads it as --api-key);
# register the deployment with secret_ref env:GENNAI_UPSTREAM_VLLM_LLM_JP_4_8B (or file:vllm-llm-jp-4-8b-api-key) holding the same key.

vllm serve /models/llm-jp/llm-jp-4-8b-instruct \
  --served-model-name llm-jp-4-8b \
  --tensor-parallel-size 1 \
  --max-model-len 32768 \
  --gpu-memory-utilization 0.9 \
  --dtype bfloat16 \
  --max-num-seqs 128 \
  --max-num-batched-tokens 8192 \
  --trust-remote-code \
  --reasoning-parser llmjp4 \
  --reasoning-parser-plugin llm_jp_vllm.llmjp4 \
  --enable-auto-tool-choice \
  --tool-call-parser llmjp4 \
  --tool-parser-plugin llm_jp_vllm.llmjp4 \
  --host 0.0.0.0 \
  --port 8000
