"""An owner process for tests/test_vllm_lifetime.py: starts a `VLLMServer`, prints one JSON line
(server pid, watchdog pid, url) once it answers, then sleeps until a signal ends it.

usage: python tests/vllm_owner.py MODEL_DIR VENV LOG_PATH {with|thread}
  with:   `with VLLMServer(...)` in the main thread (the usual `slm eval` shape)
  thread: `start()` from a worker thread that then ends (a Dagster step thread; the parent-death
          signal's pitfall: it fires when the starting *thread* exits)
"""

from __future__ import annotations

import json
import sys
import threading
import time

from slm_platform.inference.vllm_engine import VLLMServer


def report(server: VLLMServer) -> None:
    assert server.proc is not None and server.watchdog is not None
    print(json.dumps({"server": server.proc.pid, "watchdog": server.watchdog.pid, "url": server.url}), flush=True)


def main(model_dir: str, venv: str, log_path: str, mode: str) -> None:
    server = VLLMServer(model_dir, venv=venv, log_path=log_path, max_model_len=2048, kv_cache_gib=1,
                        startup_timeout_s=600)
    if mode == "thread":
        starter = threading.Thread(target=server.start, name="starter")
        starter.start()
        starter.join()
        report(server)
        time.sleep(3600)
    elif mode == "with":
        with server:
            report(server)
            time.sleep(3600)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
