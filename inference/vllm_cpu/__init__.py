"""Optional tier: a real vLLM on CPU serving SmolLM2 (``make test-vllm``); see docs/inference.md."""
