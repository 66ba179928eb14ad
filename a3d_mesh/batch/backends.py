"""Where a batch's attempts run: child processes on this machine (:class:`LocalBackend`), or Ray
tasks on a local Ray or a cluster (:class:`RayBackend`). Both start an :class:`AttemptSpec`, poll
it without blocking, and interrupt what is still running; the scheduling, retries and records
are the runner's (:mod:`a3d_mesh.batch.runner`), the same for both.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from typing import Any, Callable

from a3d_mesh.batch.attempt import INTERRUPT_GRACE_S, Attempt, AttemptResult, AttemptSpec, ray_task
from a3d_mesh.batch.jobs import BatchError
from a3d_mesh.errors import first_line

RAY_MISSING = "--ray needs Ray, which is not installed: pip install 'a3d-mesh[ray]'"


def visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES entries (respecting one set for the batch)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA: run on the CPU
        return []


class LocalBackend:
    """Child processes here, ``workers`` at once; with GPUs each set gets ``gpus_per_set`` of
    them of its own (CUDA_VISIBLE_DEVICES), and 0 means the CPU."""

    def __init__(self, workers: int, gpus_per_set: float, echo: Callable[[str], None]) -> None:
        if gpus_per_set != int(gpus_per_set):
            raise BatchError(f"--gpus-per-set {gpus_per_set:g}: a fraction of a GPU needs --ray (sets share a GPU "
                             f"there); without it give a whole number")
        g = int(gpus_per_set)
        gpus = visible_gpus()
        self.slots: list[tuple[str, dict[str, str]]] = []
        if gpus and g > 0:
            if workers * g > len(gpus):
                raise BatchError(f"--workers {workers} with --gpus-per-set {g} needs {workers * g} GPUs; this machine "
                                 f"has {len(gpus)} ({','.join(gpus)})")
            for w in range(workers):
                ids = gpus[w * g:(w + 1) * g]
                self.slots.append((f"gpu {','.join(ids)}", {"CUDA_VISIBLE_DEVICES": ",".join(ids)}))
        else:
            env = {"CUDA_VISIBLE_DEVICES": ""} if gpus else {}  # --gpus-per-set 0 on a GPU machine
            if workers > 1 and "OMP_NUM_THREADS" not in os.environ:  # N torch processes share the cores
                env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
            self.slots = [("cpu", dict(env)) for _ in range(workers)]
        self.free = list(range(len(self.slots)))
        self.held: dict[int, int] = {}  # id(attempt) -> slot

    @property
    def capacity(self) -> int:
        return len(self.free)

    def open(self) -> None:
        """Nothing to start here (the Ray backend connects)."""

    def start(self, spec: AttemptSpec) -> tuple[Attempt, str]:
        slot = self.free.pop(0)
        device, env = self.slots[slot]
        a = Attempt(replace(spec, env={**spec.env, **env}, device=device))
        self.held[id(a)] = slot
        return a, device

    def poll(self, handle: Attempt) -> AttemptResult | None:
        r = handle.poll()
        if r is not None:
            self.free.append(self.held.pop(id(handle)))
        return r

    def interrupt(self, handles: list[Attempt]) -> None:
        """Ctrl-C: one SIGINT to each child at once (each checkpoints), then wait for them all."""
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        for h in handles:
            h.send_interrupt()
        for h in handles:
            h.interrupt(max(0.1, deadline - time.monotonic()))  # SIGKILL whoever outlives the grace

    def result_after_interrupt(self, handle: Attempt) -> AttemptResult:
        return handle._result(handle.proc.wait())

    def close(self) -> None:
        pass


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BatchError(RAY_MISSING) from None
    return ray


class RayBackend:
    """Each attempt is a Ray task asking for ``gpus_per_set`` GPUs (none when the cluster has none)
    and one CPU; ``address`` None starts a local Ray with ``num_cpus`` CPUs."""

    def __init__(self, address: str | None, num_cpus: int, gpus_per_set: float, max_in_flight: int,
                 echo: Callable[[str], None]) -> None:
        self.ray = import_ray()  # before anything is written: a missing Ray is bad input
        self.address, self.num_cpus, self.gpus, self.echo = address, num_cpus, gpus_per_set, echo
        self.max_in_flight = max_in_flight
        self.in_flight: dict[Any, tuple[AttemptSpec, float]] = {}
        self.remote: Any = None

    @property
    def capacity(self) -> int:
        return self.max_in_flight - len(self.in_flight)

    def open(self) -> None:
        ray = self.ray
        common: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            if self.address is None:
                ray.init(num_cpus=self.num_cpus, **common)
            else:
                ray.init(address=self.address, **common)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise BatchError(f"--ray {self.address or ''}: cannot start or reach Ray: {first_line(e)}".replace(" :", ":"))
        have = float(ray.cluster_resources().get("GPU", 0))
        gpus = self.gpus
        if gpus > 0 and have == 0:
            self.echo("[batch] the Ray cluster has no GPUs; sets run on CPUs")
            gpus = 0
        elif gpus > have:
            raise BatchError(f"--gpus-per-set {gpus:g}: the Ray cluster has only {have:g} GPU(s)")
        self.remote = ray.remote(ray_task).options(num_gpus=gpus, num_cpus=1, max_retries=0)
        where = self.address or f"local, {self.num_cpus} CPUs"
        self.echo(f"[batch] Ray ({where}): {gpus:g} GPU(s) and 1 CPU per set")

    def start(self, spec: AttemptSpec) -> tuple[Any, str]:
        ref = self.remote.remote(asdict(spec))
        self.in_flight[ref] = (spec, time.monotonic())
        return ref, "ray"

    def poll(self, ref: Any) -> AttemptResult | None:
        ready, _ = self.ray.wait([ref], timeout=0)
        return self._get(ref) if ready else None

    def _get(self, ref: Any) -> AttemptResult:
        spec, t0 = self.in_flight.pop(ref)
        try:
            return AttemptResult(**self.ray.get(ref))
        except self.ray.exceptions.RayError as e:  # the worker or its node died, Ray's OOM killer, cancelled
            what = type(e).__name__
            line = first_line(str(e)) or what
            return AttemptResult(spec.name, spec.attempt, None, round(time.monotonic() - t0, 2),
                                 f"worker lost ({what}): {line}"[:300], "", "ray")

    def interrupt(self, refs: list[Any]) -> None:
        """Ctrl-C: cancel each task (its child gets a SIGINT and checkpoints), then wait for them."""
        for ref in refs:
            self.ray.cancel(ref)
        self.ray.wait(refs, num_returns=len(refs), timeout=INTERRUPT_GRACE_S + 5)

    def result_after_interrupt(self, ref: Any) -> AttemptResult:
        return self._get(ref)

    def close(self) -> None:
        self.ray.shutdown()
