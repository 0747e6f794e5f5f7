"""Fold a LoRA adapter into its base model's weights: one plain model folder, served like a base model.

Why: vLLM on a CPU runs LoRA requests 4-6x slower than base requests (the adapter's matmuls are
not fused), so evaluation serves the merged model; the weights are the same function
(``W + B @ A * alpha / r``), checked in the tests against the unmerged peft model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

_COPY = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
         "generation_config.json", "vocab.json", "merges.txt", "LICENSE")


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Write base + adapter merged (float32 safetensors, tokenizer and chat template) into `out_dir`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    for name in _COPY:  # everything a server needs besides the weights, as the base model has it
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, out_dir / name)
    return out_dir
