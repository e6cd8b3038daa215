"""Every patch of a library's private internals, in one place, each checked against the installed version.

One module per patch (or per workaround that relies on a library's private behaviour): its docstring says what
it changes and why, and its `PATCH` says which versions of the library it was checked against.
tests/unit/test_compat.py holds, for each patch, a test that fails when the library stops behaving as the patch
expects.

`install_all()` runs at start-up in every serving process (service.py and the runner services call it; every
worker imports one of them): it refuses to start when an installed library is outside a patch's checked range,
then installs the patches that replace library code, once per process. This package imports no patch module
itself (install_all does), so models/, which imports its two patches directly, runs without BentoML.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from types import ModuleType

from packaging.specifiers import SpecifierSet
from packaging.version import Version

MODULES = (
    "compat.bentoml_multipart",
    "compat.bentoml_timeout",
    "compat.bentoml_dispatcher",
    "compat.bentoml_metrics_dir",
    "compat.bentoml_access_log",
    "compat.bentoml_request_log",
    "compat.bentoml_route_metrics",
    "compat.bentoml_session_refresh",
    "compat.bentoml_tracer",
    "compat.bentoml_message_spans",
    "compat.bentoml_mime_type",
    "compat.uvicorn_request_context",
    "compat.diffusers_language_model",
    "compat.diffusers_unet_logging",
    "compat.transformers_many_clips",
    "compat.transformers_compile_config",
)
_installed = False


@dataclass(frozen=True)
class Patch:
    name: str  # the module's own name: compat/<name>.py
    library: str  # the distribution whose internals the patch relies on
    checked: str  # PEP 440 specifiers: the versions whose source the patch was checked against
    why: str
    upstream: str | None = None  # the upstream issue, where there is one


class UncheckedLibraryVersion(RuntimeError):
    """An installed library is outside the range a patch was checked against: the service does not start."""


def installed_version(library: str) -> str:
    return importlib.metadata.version(library)


def unchecked(patch: Patch) -> str | None:
    """Why `patch` must not run with the installed library, or None when the version is in its checked range."""
    version = installed_version(patch.library)
    if Version(version) in SpecifierSet(patch.checked):
        return None
    return (
        f"{patch.library} {version} is installed, but patch {patch.name} (compat/{patch.name}.py) was checked "
        f"with {patch.library}{patch.checked} only"
    )


def patch_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in MODULES]


def check_all() -> None:
    """Raise UncheckedLibraryVersion naming every patch whose library is outside its checked range."""
    problems = [problem for module in patch_modules() if (problem := unchecked(module.PATCH))]
    if problems:
        raise UncheckedLibraryVersion(
            "refusing to start: " + "; ".join(problems) + ". Install a checked version, or check the patch against "
            "this one (its docstring, tests/unit/test_compat.py) and widen its range."
        )


def install_all() -> None:
    """Check every patch's library version (each call), then install the patches (the first call only)."""
    global _installed
    check_all()
    if _installed:
        return
    for module in patch_modules():
        if hasattr(module, "install"):
            module.install()
    _installed = True
