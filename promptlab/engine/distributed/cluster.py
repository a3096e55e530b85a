"""Joining a Ray cluster, and what it offers: the only place that imports ray."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

from promptlab.errors import InputError
from promptlab.plan import PlannedModel

PROBE_S = 5.0  # how long --ray HOST:PORT may take to accept a TCP connection
INSTALL_HINT = "install it with: pip install 'promptlab[ray]'"


def import_ray() -> Any:
    """The ray module, or InputError (exit 2) saying how to install it."""
    try:
        import ray  # noqa: PLC0415 - Ray only with --ray: local runs and --help never load it
    except ImportError:
        raise InputError("--ray needs Ray, which is not installed", hint=INSTALL_HINT) from None
    return ray


def check_address(address: str) -> str:
    """`address` if it is one --ray accepts (auto, local, HOST:PORT, ray://HOST:PORT)."""
    if address in ("auto", "local"):
        return address
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(
            f"--ray {address!r}: not auto, local, HOST:PORT or ray://HOST:PORT",
            hint="--ray auto joins the cluster `ray start --head` started on this machine",
        )
    return address


@dataclass
class Cluster:
    """A connection to Ray for one run; `close` disconnects only what `connect` opened."""

    ray: Any
    address: str
    owned: bool
    max_actors: int | None = None

    def describe(self) -> dict[str, Any]:
        nodes = alive_nodes(self.ray)
        return {
            "address": self.address,
            "nodes": len(nodes),
            "cpus": sum(n["CPU"] for n in nodes),
            "gpus": sum(n["GPU"] for n in nodes),
            "max_actors": self.max_actors,
        }

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()


def connect(address: str, max_actors: int | None = None) -> Cluster:
    """Join (or with `local`, start) a Ray cluster. Reuses a connection the caller already made
    with ray.init (a notebook, the tests) and leaves it open afterwards."""
    check_address(address)
    if max_actors is not None and max_actors < 1:
        raise InputError(f"--ray-actors must be at least 1, got {max_actors}")
    ray = import_ray()
    if address not in ("auto", "local"):
        _probe(address)
    if ray.is_initialized():
        return Cluster(ray, address, owned=False, max_actors=max_actors)
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"--ray {address}: cannot reach a Ray cluster ({first})",
            hint="start one with `ray start --head` (then --ray auto, or HOST:PORT from "
            "another machine), or use --ray local",
        ) from None
    return Cluster(ray, address, owned=True, max_actors=max_actors)


def _probe(address: str) -> None:
    """Fail fast where nothing listens: ray.init retries an unreachable address for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S).close()
    except OSError as exc:
        raise InputError(
            f"--ray {address}: nothing answers there ({exc.strerror or exc})",
            hint="check the address `ray start --head` printed, and that this machine may reach "
            "that port",
        ) from None


def alive_nodes(ray: Any) -> list[dict[str, float]]:
    return [
        {"CPU": float(n["Resources"].get("CPU", 0)), "GPU": float(n["Resources"].get("GPU", 0))}
        for n in ray.nodes()
        if n.get("Alive")
    ]


def uses_gpu(ray: Any, model: PlannedModel) -> bool:
    if isinstance(model.path, str) or model.settings.n_gpu_layers == 0:
        return False  # fake models, and models kept on the CPU by n_gpu_layers: 0
    return any(n["GPU"] for n in alive_nodes(ray))


def actors_for(cluster: Cluster, model: PlannedModel, work: int) -> int:
    """How many actors a model gets: as many as the nodes' CPUs (GPUs) hold at n_threads each,
    at most one per cell of work and at most --ray-actors."""
    nodes = alive_nodes(cluster.ray)
    need = model.settings.n_threads
    if not any(n["CPU"] >= need for n in nodes):
        biggest = max((int(n["CPU"]) for n in nodes), default=0)
        raise InputError(
            f"{model.where}: model '{model.label}' runs with n_threads {need}, but no Ray node "
            f"has that many CPUs (the largest has {biggest})",
            hint=f"set n_threads: {max(1, biggest)} on the model, or add a bigger node",
        )
    fits = sum(int(n["CPU"] // need) for n in nodes)
    if uses_gpu(cluster.ray, model):
        fits = min(fits, sum(int(n["GPU"]) for n in nodes))
    limit = cluster.max_actors or fits
    return max(1, min(fits, limit, work))
