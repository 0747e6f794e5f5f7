"""Everything besides the weights that a server needs to ask the model as training did.

Each form of a package carries the same serving bundle: the base model's tokenizer and chat
template, its generation config and licence files, every role's contract (output JSON Schema, tool
catalog, input schema, the guided-decoding schema) and prompt (the file, and the system message the
renderer builds from it), and `serving.json` tying them together with the renderer version. A
server that renders with another renderer version, or another template, is not serving the model
that was evaluated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from slm_platform.domain import Domain
from slm_platform.domain.render import RENDERER_VERSION, system_message
from slm_platform.registry.packages import SERVING_FILE, Form, RoleServing, ServingSpec

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")
LICENSE_FILES = ("LICENSE", "LICENSE.txt", "NOTICE", "NOTICE.md", "GEMMA_TERMS.html")
GENERATION_CONFIG = "generation_config.json"


def _dump(path: Path, value: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path.name


def write_bundle(form_dir: Path, *, domain: Domain, version: str, form: Form, base_dir: Path, weights: str,
                 base_model: str | None = None) -> ServingSpec:
    """Write the serving bundle into `form_dir` (the weights are already there) and return serving.json."""
    if not (base_dir / GENERATION_CONFIG).is_file():
        raise FileNotFoundError(f"{base_dir / GENERATION_CONFIG}: the base model has no generation config")
    if not (base_dir / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{base_dir / 'tokenizer_config.json'}: the base model has no tokenizer config")
    for name in (*TOKENIZER_FILES, *LICENSE_FILES, GENERATION_CONFIG):
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, form_dir / name)
    roles: dict[str, RoleServing] = {}
    for role_id, contract in domain.roles.items():
        prompt = form_dir / "prompts" / f"{role_id}.md"
        prompt.parent.mkdir(parents=True, exist_ok=True)
        prompt.write_text(contract.system_prompt, encoding="utf-8")
        (form_dir / "prompts" / f"{role_id}.system.txt").write_text(system_message(contract), encoding="utf-8")
        contracts = form_dir / "contracts"
        files = {"guided_schema": _dump(contracts / f"{role_id}.guided.json", contract.guided_schema())}
        if contract.output_schema is not None:
            files["output_schema"] = _dump(contracts / f"{role_id}.output.json", contract.output_schema)
        if contract.tools is not None:
            files["tools"] = _dump(contracts / f"{role_id}.tools.json", contract.tools)
        if contract.input_schema is not None:
            files["input_schema"] = _dump(contracts / f"{role_id}.input.json", contract.input_schema)
        roles[role_id] = RoleServing(kind=contract.kind, prompt=f"prompts/{role_id}.md",
                                     system=f"prompts/{role_id}.system.txt",
                                     **{k: f"contracts/{v}" for k, v in files.items()})
    spec = ServingSpec(domain=domain.name, version=version, form=form, renderer_version=RENDERER_VERSION,
                       weights=weights, base_model=base_model, roles=roles)
    (form_dir / SERVING_FILE).write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return spec
