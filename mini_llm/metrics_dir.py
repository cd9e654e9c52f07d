"""The folder where the workers of `serve --workers N` keep their metrics for one another.

prometheus_client takes multi-process mode from `PROMETHEUS_MULTIPROC_DIR` when it is first
imported: the supervisor makes a fresh folder, hands it to its workers and removes it at
exit. A variable inherited from a parent application belongs to that parent, not to us.
This module does not import prometheus_client itself, so it can run before it is imported.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

from .contract import METRICS_DIR_VARIABLE


def drop_inherited(environ: MutableMapping[str, str], worker: bool) -> None:
    """Forget a metrics folder this process did not get from its own supervisor."""
    if not worker:
        environ.pop(METRICS_DIR_VARIABLE, None)


@contextmanager
def shared_folder(env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """The workers' environment with a fresh metrics folder, removed afterwards."""
    folder = tempfile.mkdtemp(prefix="mini-llm-metrics-")
    try:
        yield {**env, METRICS_DIR_VARIABLE: folder}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def worker_gone(env: Mapping[str, str], pid: int) -> None:
    """A worker exited: its in-flight requests and published state no longer count."""
    folder = env.get(METRICS_DIR_VARIABLE)
    if folder:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
