"""Model assets of one domain: `base_model[candidate]` and `baseline_eval[v]`.

`baseline_eval` measures the floor (oracle), the ceiling (teacher, when configured) and every
base candidate zero-shot with guided decoding on the dataset version's test split, picks the base
model by the primary metric and records whether fine-tuning is needed.
"""

import base64
from typing import Any

import dagster as dg

from slm_platform.artifacts import ArtifactStore
from slm_platform.domain import Domain
from slm_platform.evals.decision import baseline_decision
from slm_platform.evals.session import EvalSession
from slm_platform.models import candidate_key, resolve_base_model
from slm_platform.resources import ArtifactStoreResource


def candidates_partitions(domain: Domain) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([candidate_key(c) for c in domain.config.model.candidates])


def candidate_for_key(domain: Domain, key: str) -> str:
    return next(c for c in domain.config.model.candidates if candidate_key(c) == key)


def evals_dir(domain: str, version: str, name: str) -> str:
    return f"{domain}/evals/{version}/{name}"


def chart_markdown(png: bytes, alt: str, limit: int = 120_000) -> str:
    """A small chart inline (the UI shows it); a big one is only linked, to keep the event log lean."""
    if len(png) > limit:
        return ""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})\n\n"


def publish_eval(store: ArtifactStore, rel: str, session: EvalSession, results: dict, *, parents: list,
                 extra: dict[str, Any], notes: list[str]) -> tuple[str, str, bytes]:
    with store.publish(rel, kind="eval_report", parents=parents, producer="slm_platform.evals",
                       extra=extra, overwrite=True) as staging:
        markdown = session.write(staging, results, extra=extra, notes=notes)
        png = (staging / "chart.png").read_bytes()
    return markdown, store.read_manifest(rel).hash, png


def build_model_assets(domain: Domain, *, versions: dg.PartitionsDefinition, common: dict[str, Any]):
    name = domain.name
    base_key = dg.AssetKey([name, "base_model"])
    dataset_key = dg.AssetKey([name, "dataset"])
    baseline_key = dg.AssetKey([name, "baseline_eval"])
    candidates = candidates_partitions(domain)

    @dg.asset(key=base_key, partitions_def=candidates, kinds={"safetensors"}, **common,
              description=f"A base-model candidate of {name}, converted once into a verified HF folder.")
    def base_model(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        model = resolve_base_model(candidate_for_key(domain, context.partition_key), artifacts.store(),
                                   log=context.log.info)
        return dg.MaterializeResult(
            metadata={"dagster/uri": dg.MetadataValue.path(model.uri), "candidate": model.candidate,
                      "parameters": dg.MetadataValue.int(model.params), "chat_template": model.chat_template,
                      "weights_sha256": model.weights_sha256},
            data_version=dg.DataVersion(model.weights_sha256))

    @dg.asset(key=baseline_key, partitions_def=versions, kinds={"eval"}, **common,
              deps=[dg.AssetDep(dataset_key), dg.AssetDep(base_key, partition_mapping=dg.AllPartitionMapping())],
              description=f"Floor, ceiling and zero-shot base candidates on the {name} test split; "
                          "picks the base model and records the fine-tune decision.")
    def baseline_eval(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
        store = artifacts.store()
        version = context.partition_key
        specs = [f"base:{c}" for c in domain.config.model.candidates]
        has_oracle = all(r.oracle is not None for r in domain.roles.values())
        if domain.config.eval.floor == "oracle" and has_oracle:
            specs.insert(0, "oracle")
        if domain.config.eval.ceiling == "teacher" and domain.config.teacher.provider != "none":
            specs.append("teacher")
        session = EvalSession.for_domain_split(domain, store, version, "test", specs,
                                               engine=domain.config.serving.engine,
                                               guided=domain.config.serving.guided_decoding)
        results = session.run(log=context.log.info)
        decision = baseline_decision(domain, results)
        rel = evals_dir(name, version, "baseline")
        parents = [f"{name}/datasets/{version}"] + [f"base_models/{candidate_key(c)}"
                                                     for c in domain.config.model.candidates]
        markdown, manifest_hash, png = publish_eval(store, rel, session, results, parents=parents,
                                                    extra={"decision": decision}, notes=[decision["summary"]])
        md: dict[str, Any] = {
            "dagster/uri": dg.MetadataValue.path(store.uri(rel)),
            "report": dg.MetadataValue.md(chart_markdown(png, "baseline") + markdown),
            "chosen_base": decision["chosen_base"],
            "fine_tune": dg.MetadataValue.bool(decision["fine_tune"]),
            "decision": decision["summary"],
            "n_test": dg.MetadataValue.int(len(session.turns)),
        }
        for spec, res in results.items():
            value = res.metric(session.primary)
            if value is not None:
                md[f"{session.primary}/{spec.replace(':', '_')}"] = dg.MetadataValue.float(float(value))
        context.log.info(decision["summary"])
        return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(manifest_hash))

    return [base_model, baseline_eval]

