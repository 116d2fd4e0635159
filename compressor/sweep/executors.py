"""Where trials run: in this process, in N worker processes, or on a Ray cluster. All three hand back
`concurrent.futures.Future`s of `run_trial`'s result, so the sweep loop is one.

The executors are registered with their options (`compressor.registry.EXECUTORS`: `local`, `ray`); a third-party
package registers its own with `@register_executor("name", Options)` on a function `make(options) -> Executor`."""
from __future__ import annotations

import abc
import concurrent.futures as cf
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.errors import CompressError, ConfigError, one_line
from compressor.options import option
from compressor.registry import EXECUTORS, register_executor

log = logging.getLogger(__name__)


def run_trial(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one trial's pipeline (`payload`: doc, out, store, threads) into the shared store. Returns the
    report rows, or the trial's one-line error: a failing trial never stops the sweep."""
    from compressor.pipeline import Pipeline

    start = time.perf_counter()
    try:
        if payload.get("threads"):
            import torch

            torch.set_num_threads(int(payload["threads"]))
        pipeline = Pipeline.from_dict(payload["doc"], source=f"trial {payload['doc'].get('name')}")
        result = pipeline.run(out=payload["out"], store=payload["store"], progress=False)
        return {"ok": True, "rows": [s.record for s in result.stages], "wall_s": time.perf_counter() - start}
    except CompressError as exc:
        error = one_line(str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure of one trial is recorded, the sweep goes on
        error = one_line(f"{type(exc).__name__}: {exc}")
    return {"ok": False, "error": error[:2000], "wall_s": time.perf_counter() - start}


class Executor(abc.ABC):
    """Runs `run_trial` payloads; `capacity` of them at once."""

    capacity: int = 1
    threads: int | None = None  # torch threads per trial

    @abc.abstractmethod
    def submit(self, payload: dict[str, Any]) -> cf.Future:
        """Start one trial; its future resolves to `run_trial`'s result."""

    def close(self) -> None:
        pass


class InlineExecutor(Executor):
    """One trial at a time, in this process (the default): the future is done when submit returns."""

    def submit(self, payload: dict[str, Any]) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(run_trial(payload))
        return future


class ProcessExecutor(Executor):
    """`workers` trials at once, each in a fresh (spawned) worker process with cores / workers threads."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.capacity = workers
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, payload: dict[str, Any]) -> cf.Future:
        return self.pool.submit(run_trial, payload)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """Trials as Ray tasks (`pip install compressor[ray]`): per-trial CPUs/GPUs, a trial whose worker dies is
    retried `max_retries` times. Ray only runs trials; the sweep's record stays in its Optuna journal."""

    def __init__(self, opts: Any) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor ray needs Ray: pip install 'compressor[ray]' (or use executor: local)") from None
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray >= 2.60 defaults to token auth for local clusters
        if not ray.is_initialized():
            ray.init(address=opts.address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self.ray = ray
        self.remote = ray.remote(num_cpus=opts.cpus, num_gpus=opts.gpus, max_retries=opts.max_retries,
                                 retry_exceptions=False)(run_trial)
        cpus = ray.cluster_resources().get("CPU", 1)
        self.capacity = opts.max_concurrent or max(1, int(cpus // max(opts.cpus, 1e-9)))
        self.threads = max(1, int(opts.cpus)) if opts.cpus >= 1 else 1

    def submit(self, payload: dict[str, Any]) -> cf.Future:
        return self.remote.remote(payload).future()

    def close(self) -> None:
        pass  # a cluster Ray started for this sweep goes when the process exits; a joined one stays


@dataclass(frozen=True)
class LocalOptions:
    workers: int = option(1, "trials run at once, each in its own process when > 1", min=1, max=256)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = option(None, "Ray cluster address ('auto' joins a running cluster; null starts a local one)")
    cpus: float = option(1.0, "CPUs per trial", min=0)
    gpus: float = option(0.0, "GPUs per trial", min=0)
    max_retries: int = option(2, "retries of a trial whose worker died", min=0, max=100)
    max_concurrent: int = option(0, "trials in flight (0 = the cluster's CPUs / cpus)", min=0, max=10_000)


@register_executor("local", LocalOptions)
def local(opts: LocalOptions) -> Executor:
    """Trials on this machine: one at a time in this process, or `workers` worker processes."""
    return ProcessExecutor(opts.workers) if opts.workers > 1 else InlineExecutor()


@register_executor("ray", RayOptions)
def ray(opts: RayOptions) -> Executor:
    """Trials as tasks on a Ray cluster (pip install 'compressor[ray]')."""
    return RayExecutor(opts)


def make_executor(kind: str, opts: Any) -> Executor:
    """The executor `kind`, built by its registered factory from its options."""
    return EXECUTORS.get_or_error(kind, "executor").make(opts)


def trial_payload(doc: dict[str, Any], out: Path, store: Path, threads: int | None) -> dict[str, Any]:
    return {"doc": doc, "out": str(out), "store": str(store), "threads": threads}
