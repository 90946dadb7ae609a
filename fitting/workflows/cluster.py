"""The dask cluster a cohort fit runs on: a new :class:`distributed.LocalCluster`
(:func:`local_client`: worker processes with one thread each, which skip interpreter
finalisation at exit, :class:`FastExit`), an existing scheduler given by address, or a
client the caller owns (:func:`cluster_client`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from carthema.data.errors import InputError

#: How long to keep trying to reach a scheduler given by address.
CONNECT_TIMEOUT = "15s"


@contextlib.contextmanager
def cluster_client(scheduler: Any, workers: int | None, cores: int) -> Iterator[Any]:
    from distributed import Client

    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler  # an existing distributed.Client: the caller owns it
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot reach the dask scheduler at {scheduler} ({exc})",
                fix="start one with `dask scheduler` and workers with `dask worker ADDRESS "
                "--nthreads 1`, or leave out --scheduler to use a local cluster",
            ) from None
        with client:
            yield client
        return
    with local_client(workers, cores) as client:
        yield client


@contextlib.contextmanager
def local_client(workers: int | None = None, cores: int = 1) -> Iterator[Any]:
    """A :class:`distributed.Client` on a new LocalCluster, closed on exit.

    ``workers`` processes (default ``cpu_count // cores``) with one thread each; each
    fit in a worker may use ``cores`` cores (``NUMBA_NUM_THREADS``).
    """
    from distributed import Client, LocalCluster

    n = int(workers) if workers else max(1, (os.cpu_count() or 1) // max(1, int(cores)))
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"NUMBA_NUM_THREADS": str(max(1, int(cores)))},
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(FastExit(), name=FastExit.name)
        yield client


def _exit_now() -> None:  # pragma: no cover - runs in worker processes at exit
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(0)


class FastExit(WorkerPlugin):
    """Worker plugin: the worker process skips interpreter finalisation at exit.

    A worker that has loaded PyMC, PyTensor and numba-compiled solvers takes seconds to
    finalise the interpreter after the worker itself has closed (tearing down compiled
    code), longer than the nanny's 4 s grace period on a busy machine; the nanny then
    kills it and logs a warning. Only used for the local cluster's own processes: the
    handler is registered last, so it runs first (after the worker has closed and removed
    its scratch folder) and ends the process.
    """

    name = "carthema-fast-exit"

    def setup(self, worker: Any) -> None:
        import atexit

        atexit.register(_exit_now)


def count_workers(client: Any) -> int:
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - informational only
        return 0


def cluster_name(scheduler: Any) -> str:
    """Where the fits run, for the log."""
    if isinstance(scheduler, str) and scheduler:
        return f"the dask scheduler at {scheduler}"
    return "the given dask client" if scheduler is not None else "a local dask cluster"
