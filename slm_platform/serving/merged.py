"""Merged packages as separate served models: where the vLLM serving each one lives.

A merged form is a whole model folder, so it cannot join a running vLLM the way a LoRA adapter
does: each served version needs a vLLM of its own, started on that folder under the version's name
(`--served-model-name <domain>--<version>--<hash12>--merged`).
In production these are Deployments (`k8s/serving/`), and the gateway finds the one serving a name
among `SLM_GATEWAY_MERGED_VLLM_URLS`. Without that setting (a laptop), the gateway starts a managed
vLLM CPU server per merged version itself, waits until it is healthy before the version's route
switches to it (the previous champion keeps answering meanwhile), and stops the servers that neither
the current nor the previous route table names (the previous champion's stays up: a rollback right
after a promote is instant).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from slm_platform.serving.upstreams import VLLMUpstream

if TYPE_CHECKING:
    from slm_platform.inference.vllm_engine import VLLMServer

log = logging.getLogger("slm_platform.serving")

MANAGED_KV_CACHE_GIB = 1.0  # a served version's own KV cache on vLLM CPU (one request stream is small)


@dataclass
class _Managed:
    server: VLLMServer
    upstream: VLLMUpstream


class MergedModels:
    """Finds, or starts, the vLLM that serves a merged model under a name. Thread-safe (the router
    reloads domains in worker threads)."""

    def __init__(self, urls: list[str] | None = None, *, max_model_len: int = 2048,
                 kv_cache_gib: float = MANAGED_KV_CACHE_GIB):
        self.urls = [u.rstrip("/") for u in (urls or [])]
        self.max_model_len = max_model_len
        self.kv_cache_gib = kv_cache_gib
        self._remote: dict[str, VLLMUpstream] = {}  # url -> upstream
        self._managed: dict[str, _Managed] = {}  # served name -> its own server
        self._lock = threading.Lock()

    @property
    def managed(self) -> bool:
        return not self.urls

    def ensure_model(self, name: str, folder: Path) -> VLLMUpstream:
        """The upstream that serves merged model `name` (folder `folder`); blocking. Raises
        RuntimeError saying what to start when no server has it."""
        return self._start(name, folder) if self.managed else self._find(name, folder)

    def _find(self, name: str, folder: Path) -> VLLMUpstream:
        for url in self.urls:
            try:
                resp = httpx.get(url + "/v1/models", timeout=5.0)
                served = {m["id"] for m in resp.json()["data"]} if resp.status_code == 200 else set()
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
            if name in served:
                with self._lock:
                    return self._remote.setdefault(url, VLLMUpstream(url))
        raise RuntimeError(f"no vLLM in SLM_GATEWAY_MERGED_VLLM_URLS ({', '.join(self.urls)}) serves merged model "
                           f"{name}: start one on the package's merged/ folder ({folder}) with --served-model-name {name}")

    def _start(self, name: str, folder: Path) -> VLLMUpstream:
        from slm_platform.inference.vllm_engine import VLLMServer, VLLMServerError

        with self._lock:
            known = self._managed.get(name)
            if known is not None and known.server.running():
                return known.upstream
        log.info("starting a vLLM server for merged model %s (%s)", name, folder)
        server = VLLMServer(folder, served_model_name=name, enable_lora=False, max_model_len=self.max_model_len,
                            kv_cache_gib=self.kv_cache_gib)  # log: $SLM_HOME/logs/vllm-<name>-<port>.log
        try:
            server.start()
            server.wait_healthy()
        except (VLLMServerError, OSError) as exc:
            server.stop()
            raise RuntimeError(f"the vLLM server for merged model {name} did not start: {exc}") from None
        managed = _Managed(server, VLLMUpstream(server.url))
        with self._lock:
            self._managed[name] = managed
        log.info("merged model %s served at %s", name, server.url)
        return managed.upstream

    def retain(self, names: set[str]) -> list[str]:
        """Stop the managed servers whose name is not in `names`; the names stopped."""
        with self._lock:
            gone = [n for n in self._managed if n not in names]
            stopping = [self._managed.pop(n) for n in gone]
        for m in stopping:
            m.server.stop()
        for n in gone:
            log.info("stopped the vLLM server of merged model %s (no route names it)", n)
        return gone

    def close(self) -> None:
        self.retain(set())
