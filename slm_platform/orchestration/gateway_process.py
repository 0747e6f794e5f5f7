"""The gateway as a child process (`slm serve` on a free loopback port), for whatever drives traffic
through the real HTTP path: `slm run`'s loop day, and the tests.

It runs in its own session (a process group), so stopping it also stops the managed vLLM server it
started; `stop()` sends SIGTERM (the gateway drains in-flight requests, writes its capture and
shadow pairs, stops vLLM) and kills the group only past the grace.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

STOP_GRACE_S = 60.0


class GatewayStartError(RuntimeError):
    """The gateway exited or did not answer /readyz in time (the message carries its log's tail)."""


class GatewayProcess:
    def __init__(self, env: dict[str, str], log: Path, host: str = "127.0.0.1", *,
                 domains: list[str] | None = None):
        from slm_platform.inference.vllm_engine import free_port

        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.log = log
        self._log_file = open(log, "wb")
        only = ["--domains", *domains] if domains else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "slm_platform.cli", "serve", "--host", host, "--port", str(self.port), *only],
            env={**os.environ, **env}, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout_s: float = 240.0) -> dict[str, Any]:
        """The /readyz body once the gateway answers it with its routes (503: up, a route not ready)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GatewayStartError(f"gateway exited {self.proc.returncode}:\n{self.tail()}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=5)
                if r.status_code in (200, 503) and r.json()["routes"]:
                    return r.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise GatewayStartError(f"gateway not up after {timeout_s:.0f} s:\n{self.tail()}")

    def readyz(self) -> dict[str, Any]:
        return httpx.get(self.url + "/readyz", timeout=5).json()

    def gauge(self, name: str) -> float:
        """One unlabelled gauge or counter from /metrics (Prometheus text), 0 when absent."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        found = re.search(rf"^{re.escape(name)}(?:_total)? ([0-9.eE+-]+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log_file.close()
        return self.proc.returncode
