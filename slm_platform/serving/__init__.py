"""The serving gateway: an OpenAI-compatible drop-in for `<domain>/<role>` models (`slm serve`).

    protocol  OpenAI's request / response / stream / error shapes (pydantic)
    app       the FastAPI app: thin routes, and the edge middleware (ids, limits, keys, headers)
    gateway   one request -> one valid answer: checks, rendering, the fallback walk
    routing   the route table per role from config + release pointer, reloaded without a restart
    render    train/serve parity: the training renderer and tokenizer give the prompt ids
    upstreams the SLM on vLLM (multi-LoRA), the oracle, the teacher
    fallback  the chain and its circuit breakers
    auth      API keys (constant-time) and per-key rate limits
    metrics   Prometheus series
    hooks     `on_answered(exchange)` callbacks, off the request path
    server    uvicorn runner, vLLM beside it, SIGTERM drain
"""

from slm_platform.serving.hooks import Exchange, Hooks

__all__ = ["Exchange", "Hooks"]
