"""Each server gets its own Prometheus multiprocess folder.

BentoML's default is one folder under its home (`~/bentoml/prometheus_multiproc_dir`),
which a second server started from the same home empties and then shares: its
`/metrics` mixes in the first server's counters. `bentoml serve` imports this
module before it prepares that folder and hands it to its workers in
PROMETHEUS_MULTIPROC_DIR; here the serving process picks a fresh folder of its
own instead (an operator's PROMETHEUS_MULTIPROC_DIR is kept).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from bentoml._internal.configuration.containers import BentoMLContainer


def own_metrics_dir() -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return  # a worker (the server chose already), or the operator chose
    path = tempfile.mkdtemp(prefix="audio-studio-metrics-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    BentoMLContainer.prometheus_multiproc_dir.set(path)
