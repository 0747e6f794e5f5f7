"""`slm serve`: the gateway on uvicorn, beside a vLLM server with LoRA enabled.

vLLM: the one at `SLM_GATEWAY_VLLM_URL` (started with `--enable-lora` and
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, reading the artifact store's paths), or else a managed
`VLLMServer` started here on the base model the released packages name (the first domain's first
candidate when nothing is released yet) and stopped when the gateway stops.

Without an API key configured the gateway serves loopback only: binding any other address is
refused before anything starts. SIGTERM (or Ctrl-C) stops accepting connections, lets in-flight
requests finish (up to `DRAIN_S`), hands every answered exchange to the hooks, then stops vLLM.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from slm_platform import settings
from slm_platform.artifacts import ArtifactError, ArtifactStore
from slm_platform.registry.packages import BaseModelRef, PackageError, verify_package
from slm_platform.registry.pointer import read_pointer
from slm_platform.serving.app import create_app
from slm_platform.serving.auth import KeyRing, RateLimiter
from slm_platform.serving.capture import CaptureWriter
from slm_platform.serving.gateway import Gateway
from slm_platform.serving.routing import Router
from slm_platform.serving.shadow import ShadowSampler
from slm_platform.serving.merged import MergedModels
from slm_platform.serving.upstreams import VLLMUpstream

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
DRAIN_S = 30  # how long SIGTERM waits for in-flight requests
MAX_LORA_RANK = 64
MAX_LORAS = 8  # champion + challenger of a few domains' roles, side by side


class GatewayConfigError(ValueError):
    """The gateway will not start as asked (the message says what to change)."""


def check_bind(host: str, keys: KeyRing) -> None:
    if not keys.enabled and host not in LOOPBACK:
        raise GatewayConfigError(
            f"no API key configured (set SLM_GATEWAY_API_KEYS or SLM_GATEWAY_API_KEYS_FILE): without one the "
            f"gateway serves loopback only (127.0.0.1, ::1) and will not bind {host!r}")


def build_app(store: ArtifactStore, vllm_url: str | None, *, domains_dir: Path | None = None,
              only: list[str] | None = None, keys: KeyRing | None = None, capture: bool = False,
              shadow: bool = False):
    """The app over `store` and the vLLM at `vllm_url` (None: no SLM route); reads the gateway settings.
    `capture`: write answered requests to the domains' capture inboxes; `shadow`: ask challengers
    (`slm serve` turns both on; off here so an embedded app writes nowhere unless asked)."""
    vllm = VLLMUpstream(vllm_url) if vllm_url else None
    merged_urls = settings.gateway_merged_vllm_urls()
    # serving.form: merged: the servers at SLM_GATEWAY_MERGED_VLLM_URLS, else one started per served version
    merged = MergedModels(merged_urls) if merged_urls or vllm_url else None
    router = Router(domains_dir or settings.domains_dir(), store, vllm, merged=merged, only=only)
    rps, burst = settings.gateway_rate_limit()
    keys = keys if keys is not None else KeyRing(settings.gateway_api_keys())
    gateway = Gateway(router, vllm)
    return create_app(gateway, keys=keys, limiter=RateLimiter(rps, burst) if keys.enabled else None,
                      max_body_bytes=settings.gateway_max_body_bytes(),
                      capture=CaptureWriter(gateway.metrics) if capture else None,
                      shadow=ShadowSampler(vllm_url, store, gateway.metrics) if shadow and vllm_url else None)


def base_candidate(store: ArtifactStore, domains_dir: Path, only: list[str] | None) -> str:
    """The base model the released adapters were trained on (they must all share one), else the
    first domain's first candidate."""
    from slm_platform.domain import Domain

    first = None
    for folder in sorted(p for p in domains_dir.iterdir() if (p / "slm.config.yaml").is_file()):
        if only and folder.name not in only:
            continue
        first = first or Domain.load(folder).config.model.candidates[0]
        pointer = read_pointer(store, folder.name)
        for role in (pointer.roles.values() if pointer else ()):
            for target in (role.champion, role.challenger):
                if target is None:
                    continue
                try:
                    return BaseModelRef.read(verify_package(store, target.package_rel) / "lora").candidate
                except (ArtifactError, PackageError):
                    continue  # the gateway refuses it later, naming why
    if first is None:
        raise GatewayConfigError(f"no domain folder with a slm.config.yaml in {domains_dir}")
    return first


def serve(host: str, port: int, *, only: list[str] | None = None, log: Callable[[str], None] = print) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise
    keys = KeyRing(settings.gateway_api_keys())
    check_bind(host, keys)
    store = ArtifactStore(settings.artifacts_root())
    domains_dir = settings.domains_dir()
    url, managed = settings.gateway_vllm_url(), None
    if url is None:
        from slm_platform.inference.vllm_engine import VLLMServer
        from slm_platform.models import resolve_base_model

        candidate = base_candidate(store, domains_dir, only)
        base = resolve_base_model(candidate, store, log=log)
        log(f"starting vLLM (LoRA enabled) on {candidate} ({base.local_dir}); SLM_GATEWAY_VLLM_URL connects to a "
            f"running one instead")
        managed = VLLMServer(base.local_dir, served_model_name="base", enable_lora=True, max_lora_rank=MAX_LORA_RANK,
                             max_loras=MAX_LORAS).start()
        url = managed.url
    try:
        app = build_app(store, url, domains_dir=domains_dir, only=only, keys=keys, capture=True, shadow=True)
        log(f"gateway on http://{host}:{port}/v1 (domains in {domains_dir}; "
            f"{'API keys required' if keys.enabled else 'no API key: loopback only'})")
        config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                                timeout_graceful_shutdown=DRAIN_S, lifespan="on")
        uvicorn.Server(config).run()
    finally:
        if managed is not None:
            managed.stop()

