"""Each server gets its own Prometheus multiprocess folder.

What it changes: in the serving process, BentoML's private container field
`BentoMLContainer.prometheus_multiproc_dir` is set to a fresh temporary folder (removed at exit).

Why: BentoML's default is one folder under its home (`~/bentoml/prometheus_multiproc_dir`), which a second
server started from the same home empties and then shares: its `/metrics` mixes in the first server's counters.
The public PROMETHEUS_MULTIPROC_DIR cannot replace this patch: BentoML 1.4.39 ignores it in the serving process
(`_bentoml_impl.server.serving.serve_http` hands every worker `ensure_prometheus_dir()`, the container's
folder, in PROMETHEUS_MULTIPROC_DIR, over whatever the environment held). `bentoml serve` imports the service
before it prepares that folder, so the container is set in time. Where PROMETHEUS_MULTIPROC_DIR is set already
nothing changes: in a worker the server chose; in the serving process an operator set it, and BentoML then
uses its default folder, as without this patch. No upstream issue. Checked range:
`_bentoml_impl/server/serving.py`, `bentoml/serving.py` and `bentoml/_internal/configuration/containers.py`
are the same in the 1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from bentoml._internal.configuration.containers import BentoMLContainer

from compat import Patch

PATCH = Patch(
    name="bentoml_metrics_dir",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="servers started from one BentoML home share, and empty, one Prometheus multiprocess folder",
)


def install() -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return  # a worker (the server chose already), or the operator set it
    path = tempfile.mkdtemp(prefix="audio-studio-metrics-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    BentoMLContainer.prometheus_multiproc_dir.set(path)
