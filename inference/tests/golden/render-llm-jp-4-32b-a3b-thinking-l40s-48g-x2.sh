# API key: export VLLM_API_KEY=<key> first (vLLM reads it as --api-key);
# register the deployment with secret_ref env:GENNAI_UPSTREAM_VLLM_LLM_JP_4_32B_A3B_THINKING (or file:vllm-llm-jp-4-32b-a3b-thinking-api-key) holding the same key.

CUDA_VISIBLE_DEVICES=0,1 vllm serve /models/llm-jp/llm-jp-4-32b-a3b-thinking \
  --served-model-name llm-jp-4-32b-a3b-thinking \
  --tensor-parallel-size 2 \
  --max-model-len 32768 \
  --gpu-memory-utilization 0.9 \
  --dtype bfloat16 \
  --max-num-seqs 64 \
  --max-num-batched-tokens 8192 \
  --trust-remote-code \
  --reasoning-parser llmjp4 \
  --reasoning-parser-plugin llm_jp_vllm.llmjp4 \
  --enable-auto-tool-choice \
  --tool-call-parser llmjp4 \
  --tool-parser-plugin llm_jp_vllm.llmjp4 \
  --host 0.0.0.0 \
  --port 8000

CUDA_VISIBLE_DEVICES=2,3 vllm serve /models/llm-jp/llm-jp-4-32b-a3b-thinking \
  --served-model-name llm-jp-4-32b-a3b-thinking \
  --tensor-parallel-size 2 \
  --max-model-len 32768 \
  --gpu-memory-utilization 0.9 \
  --dtype bfloat16 \
  --max-num-seqs 64 \
  --max-num-batched-tokens 8192 \
  --trust-remote-code \
  --reasoning-parser llmjp4 \
  --reasoning-parser-plugin llm_jp_vllm.llmjp4 \
  --enable-auto-tool-choice \
  --tool-call-parser llmjp4 \
  --tool-parser-plugin llm_jp_vllm.llmjp4 \
  --host 0.0.0.0 \
  --port 8001
