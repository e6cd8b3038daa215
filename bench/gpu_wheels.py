"""The wheels bench/gpu.sh needs on the GPU machine, downloaded into .whl/ (git-ignored; a device call carries it).

That machine's Python 3.12 image holds torch and many libraries (/work/.library/device/KINDS.md lists them) but
not diffusers, pydantic, bentoml and the rest of what requirements.txt pulls in, and it reaches no registry. So
this walks requirements.txt's dependency closure through the packages installed here (the versions the tests ran
against), leaves out what the image has, and downloads the rest as CPython 3.12 manylinux wheels, without their
dependencies (each one needed is in the list itself). The working tree that travels, carried paths included, is
limited to 64 MiB: the download fails above MAX_WHEELS_MIB.

    .venv/bin/python bench/gpu_wheels.py             # download into .whl/ (PyPI): 53 wheels, 36.4 MiB on 2026-12-07
    .venv/bin/python bench/gpu_wheels.py --dry-run   # the list only, from this environment's metadata (CI)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the repository

from bench.common import header, write_json  # noqa: E402

WHEELS = ROOT / ".whl"
MAX_WHEELS_MIB = 40  # of the 64 MiB a device call carries: the repository itself is ~3 MiB, results included
# Python 3.12 on Linux x86-64, as the GPU image's python3 is; extras are never installed.
MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
# pip matches each manylinux tag exactly: the ones this closure's binary wheels are built for.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64"]

# In the GPU image (KINDS.md, "Python packages already there"): not carried, and their own needs are the image's.
# fmt: off
IMAGE_HAS = frozenset((
    "accelerate", "aiohappyeyeballs", "aiohttp", "aiosignal", "annotated-doc", "anyio", "attrs", "certifi",
    "charset-normalizer", "click", "cloudpickle", "filelock", "frozenlist", "fsspec", "h11", "hf-xet", "httpcore",
    "httpx", "huggingface-hub", "idna", "jinja2", "markdown-it-py", "markupsafe", "mdurl", "mpmath", "multidict",
    "networkx", "numpy", "nvidia-ml-py", "packaging", "pathspec", "pillow", "prometheus-client", "propcache",
    "protobuf", "psutil", "pygments", "pyparsing", "python-dateutil", "pyyaml", "regex", "requests", "rich",
    "safetensors", "setuptools", "shellingham", "six", "sympy", "tokenizers", "torch", "tqdm", "transformers",
    "triton", "typer", "typing-extensions", "urllib3", "uvloop", "wrapt", "yarl", "zipp",
))
# fmt: on
# In the image, but too old for this project: carried all the same.
NEWER_THAN_IMAGE = {
    "transformers": "the image has 5.17; requirements.txt pins the release compat/ was checked against",
    "typing-extensions": "pydantic needs 4.16 or later, which the image lacks",
}
# Never carried.
LEFT_OUT = {
    "torch": "the image's CUDA build is the one to use",
    "bitsandbytes": "a 43 MB wheel; no preset in deploy/presets/ uses it",
}


def requirement_roots() -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def carried() -> dict[str, str]:
    """Name -> version (as installed here) of every package to carry: the closure of requirements.txt, not
    descending into what the image has or what is left out."""
    found: dict[str, str] = {}
    pending = requirement_roots()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found or name in LEFT_OUT or (name in IMAGE_HAS and name not in NEWER_THAN_IMAGE):
            continue
        distribution = importlib.metadata.distribution(name)
        found[name] = distribution.version
        needs = (Requirement(text) for text in distribution.requires or [])
        pending += [need for need in needs if need.marker is None or need.marker.evaluate(MARKERS)]
    return dict(sorted(found.items()))


def download(packages: dict[str, str]) -> None:
    """Replace .whl/ with exactly these wheels (two versions of one package would stop the install there)."""
    shutil.rmtree(WHEELS, ignore_errors=True)
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    command = [
        *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"),
        *("--python-version", "3.12", "--implementation", "cp", *platforms, "--dest", str(WHEELS)),
        *(f"{name}=={version}" for name, version in packages.items()),
    ]
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list the wheels, download nothing")
    parser.add_argument("--out", type=Path, default=WHEELS, help="folder for gpu-wheels.json")
    args = parser.parse_args(argv)
    packages = carried()
    report: dict[str, Any] = header(None if argv is None else ["bench/gpu_wheels.py", *argv])
    report |= {"packages": packages, "newer_than_image": NEWER_THAN_IMAGE, "left_out": LEFT_OUT}
    print(" ".join(f"{name}=={version}" for name, version in packages.items()))
    if not args.dry_run:
        download(packages)
        sizes = {path.name: path.stat().st_size for path in sorted(WHEELS.glob("*.whl"))}
        report |= {"wheels": sizes, "total_mib": sum(sizes.values()) / 2**20}
        print(f"{len(sizes)} wheels, {report['total_mib']:.1f} MiB in {WHEELS}")
    write_json(args.out / "gpu-wheels.json", report)
    if report.get("total_mib", 0) > MAX_WHEELS_MIB:
        print(f"over {MAX_WHEELS_MIB} MiB: the device call carries 64 MiB at most", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
