"""Render the Bento's own Dockerfile for the CPU image: BentoML's generator, the bentofile's docker options, one change.

The bentofile targets the GPU (`docker.cuda_version`: a CUDA base image and PyPI's CUDA build of torch). For the CPU
image the same generator renders the same options with `base_image` set to the local Debian base (which carries the
bentofile's `system_packages`) and no `cuda_version`, so there is no second hand-written Dockerfile to keep in step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import attr
from bentoml._internal.bento.bento import BaseBentoInfo
from bentoml._internal.bento.build_config import DockerOptions
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.container.generate import generate_containerfile


def cpu_dockerfile(bento: Path, base_image: str) -> str:
    """The Dockerfile `bentoml containerize` would generate for this Bento, on `base_image` without CUDA."""
    with (bento / "bento.yaml").open("rb") as manifest:
        info = BaseBentoInfo.from_yaml_file(manifest)
    docker: DockerOptions = attr.evolve(info.docker, base_image=base_image, cuda_version=None)
    return generate_containerfile(
        docker=docker, build_ctx=str(bento), conda=info.conda, bento_fs=bento, enable_buildkit=False, add_header=True
    )


def system_packages(bento: Path) -> str:
    """The bentofile's `docker.system_packages`, comma-separated for mmdebstrap's --include."""
    with (bento / "bento.yaml").open("rb") as manifest:
        return ",".join(BaseBentoInfo.from_yaml_file(manifest).docker.system_packages or [])


if __name__ == "__main__":
    BentoMLContainer.bento_store  # noqa: B018 - the store's configuration is read before rendering
    command, bento = sys.argv[1], Path(sys.argv[2])
    print(cpu_dockerfile(bento, sys.argv[3]) if command == "dockerfile" else system_packages(bento))
