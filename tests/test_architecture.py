"""The architecture as tests: layers and the Dagster boundary (import-linter contracts in
pyproject.toml), no import circle anywhere in the package, and no pinned dependency without an import."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_linter_contracts_are_kept():
    proc = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "2 kept" in proc.stdout, proc.stdout[-2000:]


def import_cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_cycle_finder_finds_a_planted_circle():
    edges = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert import_cycles(edges) == [["a", "b", "c"]]
    assert import_cycles({"a": ["b"], "b": []}) == []


def test_no_import_circle_in_the_package():
    graph = grimp.build_graph("slm_platform")
    modules = sorted(graph.modules)
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i.startswith("slm_platform"))
             for m in modules}
    assert import_cycles(edges) == []


def test_no_module_outside_orchestration_imports_dagster():
    """A second, plain-text guard beside the contract (which cannot see imports hidden in strings)."""
    offenders = []
    for path in (ROOT / "slm_platform").rglob("*.py"):
        rel = path.relative_to(ROOT / "slm_platform").as_posix()
        if rel.startswith("orchestration/"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(import|from)\s+dagster(_k8s|_gcp|_postgres|_webserver)?\b", line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


# Distributions pinned without a direct import, and why each is still needed.
USED_WITHOUT_IMPORT = {
    "dagster-webserver": "the UI (`slm ui` runs `dagster dev`)",
    "dagster-dg-cli": "`dg check defs` (tests/test_definitions.py)",
    "dagster-postgres": "the instance's storage.postgres block (dagster.yaml), loaded by Dagster",
    "gguf": "transformers reads the embedded SmolLM2 GGUF through it",
    "gcsfs": "fsspec's gs:// protocol for the artifact store",
    "torch": "imported; listed here only because the Makefile installs the CPU build first",
    "pytest": "the test runner",
    "pytest-xdist": "parallel test runs (-n)",
    "psycopg2-binary": "dagster-postgres' driver",
    "psycopg[binary]": "pytest-postgresql's driver",
    "import-linter": "`lint-imports` (this file)",
    "kubernetes-validate": "imported by tests/test_launchers.py",
    "bitsandbytes": "QLoRA on CUDA (imported by the trainer when recipe.method is qlora)",
    "vllm": "the GPU extra: the vLLM server runs as its own process",
    "google-cloud-aiplatform": "the Vertex extra: google.genai",
}
IMPORT_NAMES = {"pyyaml": "yaml", "scikit-learn": "sklearn", "dagster-k8s": "dagster_k8s", "dagster-gcp": "dagster_gcp",
                "pytest-postgresql": "pytest_postgresql", "hypothesis": "hypothesis",
                "opentelemetry-sdk": "opentelemetry.sdk",
                "opentelemetry-exporter-otlp-proto-http": "opentelemetry.exporter.otlp.proto.http"}


def _pins() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    return [re.split(r"[=<>!~ ;]", spec, maxsplit=1)[0] for spec in specs]


def test_every_pinned_dependency_is_imported_or_explained():
    sources = "\n".join(p.read_text() for d in ("slm_platform", "tests", "benchmarks", "scripts")
                        for p in (ROOT / d).rglob("*.py"))
    unexplained = []
    for dist in _pins():
        if dist in USED_WITHOUT_IMPORT:
            continue
        name = IMPORT_NAMES.get(dist, dist.replace("-", "_"))
        if not re.search(rf"^\s*(import|from)\s+{re.escape(name)}\b", sources, re.M):
            unexplained.append(dist)
    assert unexplained == [], f"pinned but never imported: {unexplained}"


def _closure(names: list[str]) -> set[str]:
    """The pinned distributions and everything they require, as installed here (normalized names)."""
    from importlib import metadata
    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    seen: set[str] = set()
    todo = [norm(re.sub(r"\[.*\]", "", n)) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(norm(req.name))
    return seen


def test_every_imported_third_party_module_comes_from_a_pinned_distribution():
    """A module that is only installed because an unpinned package pulled it in breaks a clean clone
    the day that package goes (xxhash came with `datasets`; dropping the pin broke CI)."""
    from importlib import metadata

    provided = metadata.packages_distributions()
    allowed = _closure(_pins())
    missing = {}
    for path in (p for d in ("slm_platform", "tests", "benchmarks", "scripts", "domains") for p in (ROOT / d).rglob("*.py")):
        for name in re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", path.read_text(), re.M):
            if name in sys.stdlib_module_names or name == "slm_platform" or name not in provided:
                continue
            dists = {re.sub(r"[-_.]+", "-", d).lower() for d in provided[name]}
            if not dists & allowed:
                missing[name] = sorted(dists)
    assert missing == {}, f"imported but not pinned (nor required by a pin): {missing}"
