"""The managed vLLM server's environment and lifetime (slm_platform/inference/vllm_engine.py).

- The server inherits an allow-list of this process's environment: no teacher keys, no database
  URL, no random tokens.
- However its owner ends (SIGINT, SIGTERM, SIGKILL; started from the main thread or from a thread
  that has ended), no process of the server outlives it: the API server, every descendant, the
  whole process group, and the watchdog too.

The fast tests run the exact spawn/watchdog code on a stand-in "venv" whose `python` answers /health
and starts an "engine core" child that ignores SIGTERM (only a SIGKILL of the group ends it). The
integration test does the same with the real vLLM CPU server on the embedded SmolLM2 for SIGKILL,
where only the watchdog can act (a server start is 1-3 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from slm_platform.inference.vllm_engine import VLLMServer, group_members

from conftest import NO_VLLM_REASON, VLLM_VENV, vllm_venv_missing  # tests/conftest.py

ROOT = Path(__file__).resolve().parent.parent
OWNER = Path(__file__).resolve().parent / "vllm_owner.py"

# Stands in for `python -m vllm.entrypoints.openai.api_server`: writes its environment next to the
# model, starts an "engine core" child that ignores SIGTERM, and answers GET /health.
FAKE_SERVER = '''#!{python}
import json, os, subprocess, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port = int(sys.argv[sys.argv.index("--port") + 1])
model = sys.argv[sys.argv.index("--model") + 1]
with open(os.path.join(model, "env.json"), "w") as f:
    json.dump(dict(os.environ), f)
core = subprocess.Popen([sys.executable, "-c",
                         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"])


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", port), Health).serve_forever()
'''


@pytest.fixture(scope="module")
def fake_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("fake-vllm-venv")
    python = venv / "bin" / "python"
    python.parent.mkdir()
    python.write_text(FAKE_SERVER.format(python=sys.executable))
    python.chmod(0o755)
    return venv


@pytest.fixture
def fake_model(tmp_path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    return model


# --- /proc helpers ---------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, start time) of `pid`, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw.rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19])


def _all_stats() -> dict[int, tuple[str, int, int, int]]:
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = st
    return stats


def server_processes(server_pid: int) -> dict[int, int]:
    """pid -> start time of every process of the server: its process group plus all its descendants
    (the start time tells a reused pid from the original)."""
    stats = _all_stats()
    found = {pid for pid, st in stats.items() if st[2] == server_pid} | {server_pid}
    frontier = list(found)
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, st in stats.items() if st[1] == parent and pid not in found]
        found.update(children)
        frontier.extend(children)
    return {pid: stats[pid][3] for pid in found if pid in stats}


def alive(procs: dict[int, int]) -> list[int]:
    """The processes of `procs` still running (same pid and start time, not a zombie)."""
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[3] == start and st[0] != "Z":
            out.append(pid)
    return out


def wait_dead(procs: dict[int, int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# --- the owner process -----------------------------------------------------------------------------
def _default_signals() -> None:
    """The owner starts as `slm eval` from a shell does: default signal actions, none blocked (not
    whatever this pytest process happens to block or ignore by now)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)



class Owner:
    """tests/vllm_owner.py in a subprocess, started with the project venv's python."""

    def __init__(self, model_dir: Path, venv: Path, log_path: Path, mode: str):
        self.log_path = log_path
        self.stderr_path = log_path.with_suffix(".owner.err")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(OWNER), str(model_dir), str(venv), str(log_path), mode],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            preexec_fn=_default_signals)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def diagnostics(self) -> str:
        owner_err = self.stderr_path.read_text(errors="replace")[-3000:]
        server_log = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else "(no log)"
        return f"owner stderr:\n{owner_err}\nserver log:\n{server_log}"

    def ready(self, timeout_s: float) -> dict:
        """The owner's report once its server answers /health."""
        try:
            return json.loads(self._lines.get(timeout=timeout_s))
        except queue.Empty:
            pytest.fail(f"the owner did not report a healthy server in {timeout_s:.0f}s\n{self.diagnostics()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def signal_owner_and_check(owner: Owner, info: dict, sig: signal.Signals, *, cleanup_in_owner: bool,
                           bound_s: float) -> dict[int, int]:
    """Signal the owner; assert it dies of `sig` and every server process (and the watchdog) is gone
    within `bound_s`. `cleanup_in_owner`: the owner's own stop ran, so nothing is left the moment it
    has exited (no watchdog needed)."""
    procs = server_processes(info["server"])
    assert info["server"] in procs and len(procs) >= 2, f"expected the server and its child(ren): {procs}"
    watchdog_stat = _stat(info["watchdog"])
    assert watchdog_stat is not None and watchdog_stat[0] != "Z", "the watchdog is not running"
    watchdog = {info["watchdog"]: watchdog_stat[3]}
    assert httpx.get(info["url"] + "/health", timeout=10).status_code == 200

    t0 = time.monotonic()
    os.kill(owner.proc.pid, sig)
    try:
        code = owner.proc.wait(timeout=bound_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the owner did not exit within {bound_s}s of {sig.name}\n{owner.diagnostics()}")
    assert code == -sig, f"owner exit status {code}, expected death by {sig.name}\n{owner.diagnostics()}"
    if cleanup_in_owner:
        assert alive(procs) == [], f"server processes left when the owner exited: {alive(procs)}"
    left = wait_dead({**procs, **watchdog}, max(0.0, bound_s - (time.monotonic() - t0)))
    assert left == [], (f"still alive {bound_s}s after {sig.name} to the owner: "
                        f"{[(pid, _stat(pid)) for pid in left]}\n{owner.diagnostics()}")
    assert group_members(info["server"]) == []
    return procs


# --- environment -----------------------------------------------------------------------------------
SECRETS = {
    "OPENAI_API_KEY": "sk-secret",
    "SLM_DAGSTER_STORAGE_URL": "postgresql://user:pw@db:5432/dagster",
    "FOO_TOKEN": "token-123",
    "HF_TOKEN": "hf_secret",
    "DAGSTER_HOME": "/somewhere/dagster",
    "PYTHONPATH": "/not/for/the/vllm/venv",
}


def test_server_environment_is_an_allow_list(fake_venv, fake_model, tmp_path, monkeypatch):
    allowed = {
        "HOME": str(tmp_path), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": str(tmp_path),
        "OMP_NUM_THREADS": "2", "VLLM_CPU_OMP_THREADS_BIND": "all", "VLLM_CPU_NUM_OF_RESERVED_CPU": "1",
        "HF_HOME": str(tmp_path / "hf"), "LD_LIBRARY_PATH": "/opt/lib",
    }
    for name, value in {**SECRETS, **allowed}.items():
        monkeypatch.setenv(name, value)
    server = VLLMServer(fake_model, venv=fake_venv, log_path=tmp_path / "server.log", env={"EXTRA_FLAG": "1"},
                        startup_timeout_s=30)
    declared = server.environment()
    with server:
        pass
    spawned = json.loads((fake_model / "env.json").read_text())  # what the process really got
    for env in (declared, spawned):
        assert not SECRETS.keys() & env.keys(), sorted(SECRETS.keys() & env.keys())
        assert {k: env.get(k) for k in allowed} == allowed
        assert env["PATH"].startswith(f"{fake_venv / 'bin'}{os.pathsep}")
        assert env["VIRTUAL_ENV"] == str(fake_venv) and env["HF_HUB_OFFLINE"] == "1"
        assert env["EXTRA_FLAG"] == "1"  # env= still reaches the server
    assert set(spawned) - set(declared) <= {"LC_CTYPE"}  # nothing else sneaks in (PEP 538 may add LC_CTYPE)


def test_compile_cache_setting_defaults_off_and_an_operator_choice_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_USE_AOT_COMPILE", raising=False)
    assert VLLMServer(tmp_path).environment()["VLLM_USE_AOT_COMPILE"] == "0"
    monkeypatch.setenv("VLLM_USE_AOT_COMPILE", "1")
    assert VLLMServer(tmp_path).environment()["VLLM_USE_AOT_COMPILE"] == "1"


# --- lifetime, fast: the stand-in server -----------------------------------------------------------
def test_stop_ends_the_group_the_watchdog_and_the_signal_handlers(fake_venv, fake_model, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    server = VLLMServer(fake_model, venv=fake_venv, log_path=tmp_path / "server.log", startup_timeout_s=30).start()
    assert server.proc is not None and server.watchdog is not None
    procs = server_processes(server.proc.pid)
    watchdog = server.watchdog
    assert len(procs) == 2  # the server and its SIGTERM-ignoring "engine core"
    if before is signal.SIG_DFL:  # a SIGTERM now stops the server first
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 10
    assert alive(procs) == [] and watchdog.poll() is not None
    assert signal.getsignal(signal.SIGTERM) is before
    assert not server.running()


def test_a_server_started_while_sigterm_is_blocked_still_stops_at_sigterm(fake_venv, fake_model, tmp_path):
    """A thread's signal mask and ignored signals survive exec: started with SIGTERM blocked here, the
    server would take stop()'s SIGTERM only as the SIGKILL 30 s later (seen at the end of a full suite)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        server = VLLMServer(fake_model, venv=fake_venv, log_path=tmp_path / "server.log", startup_timeout_s=30).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    assert server.proc is not None
    blocked = Path(f"/proc/{server.proc.pid}/status").read_text().split("SigBlk:")[1].split()[0]
    assert int(blocked, 16) & (1 << (signal.SIGTERM - 1)) == 0, blocked
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 10


def test_a_forked_child_does_not_stop_its_parents_server(fake_venv, fake_model, tmp_path):
    """A fork of the owner (multiprocessing, a Dagster executor) inherits `_LIVE`, atexit and the
    signal handler: none of them may stop the parent's server."""
    # start from the default disposition, whatever an earlier test or the runner left (Dagster installs
    # its own SIGTERM handler), so that the handler the fork inherits is the server's own
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    server = VLLMServer(fake_model, venv=fake_venv, log_path=tmp_path / "server.log", startup_timeout_s=30).start()
    try:
        assert server.proc is not None and server.watchdog is not None
        procs = {**server_processes(server.proc.pid), server.watchdog.pid: _stat(server.watchdog.pid)[3]}
        for how in ("signal", "stop"):
            child = os.fork()
            if child == 0:  # pragma: no cover - runs in the child
                try:
                    if how == "signal":
                        os.kill(os.getpid(), signal.SIGTERM)  # whichever handler pytest's fork inherited
                    else:
                        server.stop()
                finally:
                    os._exit(0)
            _, status = os.waitpid(child, 0)
            assert status != 0 or how == "stop"  # the child died of its signal after the server's handler ran
            assert sorted(alive(procs)) == sorted(procs), how
            assert server.running() and httpx.get(server.url + "/health", timeout=5).status_code == 200
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    assert alive(procs) == []


@pytest.mark.parametrize("sig, mode, cleanup_in_owner", [
    (signal.SIGINT, "with", True),    # KeyboardInterrupt unwinds through `with`
    (signal.SIGTERM, "with", True),   # the handler stops the servers, then the process dies of SIGTERM
    (signal.SIGKILL, "with", False),  # no cleanup in the owner: parent-death signal + watchdog
    (signal.SIGTERM, "thread", False),  # no handler from a thread: the watchdog alone
    (signal.SIGKILL, "thread", False),
], ids=["sigint", "sigterm", "sigkill", "thread-sigterm", "thread-sigkill"])
def test_owner_death_ends_the_stand_in_server(fake_venv, fake_model, tmp_path, sig, mode, cleanup_in_owner):
    owner = Owner(fake_model, fake_venv, tmp_path / "server.log", mode)
    try:
        info = owner.ready(timeout_s=60)
        if mode == "thread":  # the starting thread has ended: the server must still be there
            time.sleep(0.5)
            assert alive(server_processes(info["server"]))
        signal_owner_and_check(owner, info, sig, cleanup_in_owner=cleanup_in_owner, bound_s=15)
    finally:
        owner.close()
    if not cleanup_in_owner:
        assert "owner process" in (tmp_path / "server.log").read_text()  # the watchdog did it


# --- lifetime, the real vLLM server -----------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.own_vllm_server  # runs first, before the session's shared server: never two at once
@pytest.mark.skipif(vllm_venv_missing(), reason=NO_VLLM_REASON)
@pytest.mark.parametrize("sig, cleanup_in_owner", [(signal.SIGKILL, False)], ids=["sigkill"])
def test_owner_death_ends_the_real_vllm_server(smollm2_dir, tmp_path, sig, cleanup_in_owner):
    """`slm eval` killed by `timeout -s KILL` (no handler runs: only the watchdog can act) must not leave
    vLLM running. SIGINT and SIGTERM take the same group stop with the real server as with the stand-in
    above, which checks them; one real server start costs 1-3 minutes on 2 cores, so only the hardest
    case starts one."""
    owner = Owner(smollm2_dir, VLLM_VENV, tmp_path / "server.log", "with")
    try:
        info = owner.ready(timeout_s=600)
        procs = signal_owner_and_check(owner, info, sig, cleanup_in_owner=cleanup_in_owner, bound_s=60)
    finally:
        owner.close()
    assert len(procs) >= 2  # the API server and its engine-core process were both checked
