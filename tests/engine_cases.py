"""Requests, contracts and helpers shared by the two engine test files (vLLM and transformers):
both engines must pass the same cases."""

from __future__ import annotations

from pathlib import Path

from jsonschema import Draft202012Validator

from slm_platform.config.models import Role
from slm_platform.domain.contract import RoleContract

TRIAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "bug", "account", "how_to", "cancellation"]},
        "priority": {"enum": ["low", "medium", "high", "urgent"]},
        "needs_human": {"type": "boolean"},
    },
    "required": ["category", "priority", "needs_human"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "minLength": 2, "maxLength": 24},
            "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "book_table", "description": "Book a restaurant table.",
        "parameters": {"type": "object", "properties": {
            "restaurant": {"type": "string", "minLength": 1, "maxLength": 32},
            "people": {"type": "integer", "minimum": 1, "maximum": 12}},
            "required": ["restaurant", "people"], "additionalProperties": False}}},
]
TOOL_ASKS = [
    "What's the weather like in Paris right now?",
    "Book a table for 4 at Chez Marcel tonight.",
    "Is it raining in Berlin? Tell me in celsius.",
]


def triage_contract() -> RoleContract:
    return RoleContract(Role(id="triage", kind="structured", system_prompt="triage.md", output_schema="t.json"),
                        "Triage the support ticket. Answer with a JSON object.", output_schema=TRIAGE_SCHEMA)


def tools_contract() -> RoleContract:
    return RoleContract(Role(id="assistant", kind="tool_call", system_prompt="a.md", tools="tools.json"),
                        "You are an assistant that calls tools.", tools=TOOLS)


def user(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


def make_random_lora(model_dir: Path, out: Path, r: int = 8, seed: int = 0, scale: float = 1.0) -> Path:
    """A tiny random (non-zero) peft LoRA adapter on q_proj/v_proj: it changes the outputs.

    `scale` multiplies the B matrices: at 1.0 (peft's random init) the answers change a lot (under a
    JSON grammar they can pad whitespace until max_tokens); at 0.1 the adapter is real and distinct
    but answers like the base model; at 8 it wrecks every answer.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    if scale != 1.0:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.mul_(scale)
    peft_model.save_pretrained(str(out))
    return out


def assert_valid(results, contract: RoleContract) -> None:
    validator = Draft202012Validator(contract.guided_schema())
    for r in results:
        assert r.error is None, r.error
        assert r.finish_reason == "stop", f"ran out of tokens: {r.text!r}"
        assert r.parsed is not None, f"not a JSON object: {r.text!r}"
        assert not list(validator.iter_errors(r.parsed)), r.text
        assert contract.validate_output(r.parsed) == [], r.text
        assert r.prompt_tokens > 0 and r.completion_tokens > 0 and r.latency_ms > 0
