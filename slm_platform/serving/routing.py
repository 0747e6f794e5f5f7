"""The route table: for every `<domain>/<role>`, which upstream answers and with which version.

Built from each domain folder's config (`serving.routes`, `serving.fallback`, the latency budget,
the breaker) and the domain's release pointer (`<domain>/releases/current.json`: champion and
challenger per role). It is rebuilt without a restart: a poller stats the config folder and the
pointer file every `POLL_S` (a few system calls, no reads), and only a changed domain is reloaded,
off the event loop; the new table replaces the old one in one assignment, so a request sees one
table or the other, never a mix. A folder that no longer loads keeps its last good routes (the
error shows in /readyz). A package is served only after `verify_package` (every file against its
manifest, the manifest against the hash the pointer names, the renderer version) and its LoRA
form is loaded into the shared vLLM by name (`serving.form: lora`), or its merged form is served by
a vLLM of its own (`serving.form: merged`, `serving/merged.py`); a refused package leaves the role's
SLM route unavailable, with the reason, and requests go down the fallback chain.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slm_platform.artifacts import ArtifactError, ArtifactStore
from slm_platform.config import ConfigError
from slm_platform.config.models import BreakerBlock, CaptureBlock, RedactionPolicy, Route, ShadowBlock
from slm_platform.domain import Domain, RoleContract
from slm_platform.domain.render import RENDERER_VERSION
from slm_platform.layout import release_pointer_path
from slm_platform.registry.packages import PackageError, ServingSpec, verify_package
from slm_platform.registry.pointer import PointerTarget, read_pointer
from slm_platform.serving.merged import MergedModels
from slm_platform.serving.render import PromptRenderer
from slm_platform.serving.upstreams import VLLMUpstream

log = logging.getLogger("slm_platform.serving")

POLL_S = 0.1  # how often the local files are stat-ed (a flip takes effect within about this)
REMOTE_POLL_S = 5.0  # a gs:// pointer is read (one small GET) this often
SKIP_DIRS = {"data", "__pycache__"}  # seed data can be large and never changes routing


class AdapterHost(Protocol):
    def ensure_adapter(self, name: str, path: Path) -> None:
        """Make LoRA adapter `name` (folder `path`) servable; raise on failure."""


@dataclass(frozen=True)
class ServedVersion:
    """A verified package version that vLLM serves under the name `adapter`: a LoRA adapter on the
    shared server (`upstream` None), or a merged model on a server of its own (`upstream`)."""

    version: str
    package_rel: str
    package_hash: str
    adapter: str
    renderer: PromptRenderer = field(repr=False, compare=False)
    form: str = "lora"
    upstream: VLLMUpstream | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RoleRoute:
    domain: str
    role: str
    contract: RoleContract = field(repr=False)
    route: Route
    fallback: tuple[Route, ...]
    latency_budget_ms: int
    breaker: BreakerBlock
    teacher: Any = field(default=None, repr=False)  # a Teacher, or None when the domain has none
    teacher_name: str | None = None
    champion: ServedVersion | None = None
    challenger: ServedVersion | None = None
    slm_problem: str | None = None  # why the SLM route cannot answer (no champion, package refused)
    capture: CaptureBlock = field(default_factory=CaptureBlock, repr=False)  # data.capture: inbox, sample rate
    redaction: RedactionPolicy = field(default_factory=RedactionPolicy, repr=False)  # data.redaction, for capture
    shadow: ShadowBlock = field(default_factory=ShadowBlock, repr=False)  # serving.shadow

    @property
    def model(self) -> str:
        return f"{self.domain}/{self.role}"

    @property
    def chain(self) -> tuple[Route, ...]:
        return (self.route, *(r for r in self.fallback if r != self.route))

    def problem(self, route: Route) -> str | None:
        """Why `route` cannot answer this role, or None when it can."""
        if route == "slm":
            return self.slm_problem
        if route == "oracle":
            return None if self.contract.oracle is not None else "the role has no oracle"
        return None if self.teacher is not None else "the domain configures no teacher"


@dataclass(frozen=True)
class RouteTable:
    routes: dict[str, RoleRoute]
    generation: int = 0
    loaded_at: float = field(default_factory=time.time)
    errors: dict[str, str] = field(default_factory=dict)  # domain -> why its folder did not (re)load


class Router:
    """Holds the current RouteTable and keeps it in step with the domain folders and the registry."""

    def __init__(self, domains_dir: Path, store: ArtifactStore, adapters: AdapterHost | None, *,
                 merged: MergedModels | None = None, only: list[str] | None = None, poll_s: float = POLL_S):
        self.domains_dir = Path(domains_dir)
        self.store = store
        self.adapters = adapters
        self.merged = merged
        self.only = set(only) if only else None
        self.poll_s = poll_s
        self.table = RouteTable({})
        self._fingerprints: dict[str, Any] = {}
        self._versions: dict[tuple[str, str], ServedVersion] = {}  # (package hash, form) -> loaded version
        # (kept: rollbacks are instant; a merged version's server only while a route table names it)
        self._renderers: dict[Path, PromptRenderer] = {}
        self._teachers: dict[str, tuple[str, Any]] = {}  # domain -> (teacher config JSON, teacher)
        self._lock = threading.Lock()  # one reload at a time
        self._remote_checked: dict[str, float] = {}

    # -- discovery ---------------------------------------------------------------------------------
    def domain_folders(self) -> dict[str, Path]:
        found = {}
        if self.domains_dir.is_dir():
            for d in sorted(self.domains_dir.iterdir()):
                if (d / "slm.config.yaml").is_file() and (self.only is None or d.name in self.only):
                    found[d.name] = d
        return found

    def _fingerprint(self, name: str, folder: Path) -> Any:
        files = []
        stack = [folder]
        while stack:
            d = stack.pop()
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            if e.name not in SKIP_DIRS:
                                stack.append(Path(e.path))
                        elif e.is_file():
                            st = e.stat()
                            files.append((e.path, st.st_mtime_ns, st.st_size))
            except OSError:
                continue
        return tuple(sorted(files)), self._pointer_fingerprint(name)

    def _pointer_fingerprint(self, name: str) -> Any:
        rel = release_pointer_path(name)
        if self.store.local_root is not None:
            try:
                st = (self.store.local_root / rel).stat()
            except OSError:
                return None
            return st.st_mtime_ns, st.st_size, st.st_ino
        now = time.monotonic()  # remote: read the (small) pointer every REMOTE_POLL_S
        if now - self._remote_checked.get(name, 0.0) < REMOTE_POLL_S:
            return self._fingerprints.get(name, (None, None))[1]
        self._remote_checked[name] = now
        pointer = read_pointer(self.store, name)
        return pointer.last_event if pointer is not None else None

    def changed(self) -> list[str]:
        """Domains whose folder or pointer changed since the last load (or that appeared / went)."""
        folders = self.domain_folders()
        out = [n for n, f in folders.items() if self._fingerprints.get(n) != self._fingerprint(n, f)]
        out += [n for n in self._fingerprints if n not in folders]
        return out

    # -- loading -----------------------------------------------------------------------------------
    def reload(self, names: list[str] | None = None) -> RouteTable:
        """Rebuild the routes of `names` (default: every domain) and publish a new table."""
        with self._lock:
            folders = self.domain_folders()
            names = list(folders) + [n for n in self._fingerprints if n not in folders] if names is None else names
            routes = dict(self.table.routes)
            errors = dict(self.table.errors)
            for name in names:
                folder = folders.get(name)
                if folder is None:  # the folder went away: its routes go too
                    routes = {k: v for k, v in routes.items() if v.domain != name}
                    self._fingerprints.pop(name, None)
                    errors.pop(name, None)
                    continue
                fingerprint = self._fingerprint(name, folder)
                try:
                    fresh = self._load_domain(name, folder)
                except (ConfigError, OSError, ValueError) as exc:
                    errors[name] = f"{folder}: {exc}"
                    log.error("domain %s did not load, its previous routes stay: %s", name, exc)
                else:
                    routes = {k: v for k, v in routes.items() if v.domain != name}
                    routes.update({r.model: r for r in fresh})
                    errors.pop(name, None)
                self._fingerprints[name] = fingerprint
            previous, self.table = self.table, RouteTable(routes, self.table.generation + 1, time.time(), errors)
            if self.merged is not None:  # after the switch: the new champion answers before the old one stops
                named = _served_names(previous) | _served_names(self.table)
                stopped = set(self.merged.retain(named))
                self._versions = {k: v for k, v in self._versions.items() if v.adapter not in stopped}
            return self.table

    def _load_domain(self, name: str, folder: Path) -> list[RoleRoute]:
        domain = Domain.load(folder)
        serving = domain.config.serving
        teacher_name, teacher = self._teacher(domain)
        try:
            pointer = read_pointer(self.store, name)
        except (OSError, ValueError) as exc:
            pointer, pointer_problem = None, f"release pointer unreadable: {exc}"
        else:
            pointer_problem = None
        out = []
        for role_id, contract in domain.roles.items():
            target = pointer.roles.get(role_id) if pointer is not None else None
            champion = challenger = None
            problem = pointer_problem or "no champion in the registry for this role"
            if target is not None and target.champion is not None:
                champion, problem = self._served(name, role_id, target.champion, serving.form)
            if target is not None and target.challenger is not None:
                challenger, _ = self._served(name, role_id, target.challenger, serving.form)  # loaded beside, ready for a promote
            out.append(RoleRoute(
                domain=name, role=role_id, contract=contract, route=serving.routes.get(role_id, "slm"),
                fallback=tuple(serving.fallback), latency_budget_ms=serving.latency_budget_ms,
                breaker=serving.breaker, teacher=teacher, teacher_name=teacher_name, champion=champion,
                challenger=challenger, slm_problem=None if champion is not None else problem,
                capture=domain.config.data.capture, redaction=domain.config.data.redaction, shadow=serving.shadow))
        return out

    def _teacher(self, domain: Domain) -> tuple[str | None, Any]:
        cfg = domain.config.teacher
        if cfg.provider == "none":
            return None, None
        key = cfg.model_dump_json()
        cached = self._teachers.get(domain.name)
        if cached is None or cached[0] != key:
            from slm_platform.teachers import teacher_from_config

            cached = (key, teacher_from_config(cfg))
            self._teachers[domain.name] = cached
        return f"teacher:{cfg.model}", cached[1]

    def _served(self, domain: str, role: str, target: PointerTarget,
                form: str = "lora") -> tuple[ServedVersion | None, str | None]:
        """The verified, loaded version a pointer names, or (None, why it is refused)."""
        known = self._versions.get((target.package_hash, form))
        if known is not None:
            return known, None
        if (self.adapters if form == "lora" else self.merged) is None:
            return None, f"no vLLM server configured for the SLM route ({form} form)"
        upstream = None
        try:
            folder = verify_package(self.store, target.package_rel)
            manifest_hash = self.store.read_manifest(target.package_rel).hash
            if manifest_hash != target.package_hash:
                raise PackageError(f"manifest hash {manifest_hash[:12]} is not the released {target.package_hash[:12]}")
            served_dir = folder / form
            if not served_dir.is_dir():
                raise PackageError(f"has no {form}/ form (serving.form: {form})")
            spec = ServingSpec.read(served_dir)
            if spec.renderer_version != RENDERER_VERSION:
                raise PackageError(f"rendered with renderer version {spec.renderer_version}, this gateway renders "
                                   f"with {RENDERER_VERSION}")
            if role not in spec.roles:
                raise PackageError(f"serves roles {sorted(spec.roles)}, not {role!r}")
            adapter = f"{domain}--{target.version}--{target.package_hash[:12]}" + ("--merged" if form == "merged" else "")
            if form == "lora":
                self.adapters.ensure_adapter(adapter, served_dir)  # type: ignore[union-attr]
            else:
                upstream = self.merged.ensure_model(adapter, served_dir)  # type: ignore[union-attr]
            renderer = self._renderers.get(served_dir) or PromptRenderer(served_dir)
            self._renderers[served_dir] = renderer
        except (ArtifactError, PackageError, OSError, ValueError, RuntimeError) as exc:
            why = f"package {target.package_rel} ({target.version}) refused: {exc}"
            log.error("%s/%s: %s", domain, role, why)
            return None, why
        served = ServedVersion(target.version, target.package_rel, target.package_hash, adapter, renderer, form, upstream)
        self._versions[(target.package_hash, form)] = served
        log.info("%s/%s: serving %s as %s %s", domain, role, target.version,
                 "LoRA adapter" if form == "lora" else "merged model", adapter)
        return served, None

    # -- the poller --------------------------------------------------------------------------------
    async def watch(self) -> None:
        """Poll for changes until cancelled; each changed domain reloads in a worker thread."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                changed = self.changed()
                if changed:
                    await asyncio.to_thread(self.reload, changed)
            except Exception:  # noqa: BLE001 - the poller must outlive any one bad reload
                log.exception("route reload failed; the previous table stays")


def _served_names(table: RouteTable) -> set[str]:
    return {v.adapter for r in table.routes.values() for v in (r.champion, r.challenger) if v is not None}
