"""The network as a Ray job holds it: resolved on a worker of the kind that will run it, never loaded on
the driver, and refused on any worker whose own build differs from the job's fingerprint. Also Ray's
import and connection, and its errors made featx's own one-line errors again."""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import numpy as np
import torch

from featx.errors import FeatxError, ParameterError
from featx.models._registry import Backbone, get_backbone
from featx.models.build import build_network
from featx.models.network import Network
from featx.models.pending import PendingVectors
from featx.models.preprocessing import Preprocessing
from featx.models.spec import NetworkSpec


def ray_module():
    """Ray, imported only when a Ray job runs: it is an optional extra."""
    try:
        import ray
    except ImportError as error:
        raise ImportError("the Ray engine needs Ray Data: pip install 'featx[ray]'") from error
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` ('auto' finds a running one), or start a local Ray instance."""
    ray = ray_module()
    if not ray.is_initialized():
        if address:
            check_reachable(address)
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


#: How long a cluster's address may take to accept a connection before the job gives up on it.
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in one line, within ``timeout``, where nothing answers at ``host:port`` (or ``ray://host:port``):
    Ray itself retries an unreachable address for minutes. 'auto' and other forms are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ParameterError(
            f"Ray address {address!r} (--ray-address, or address= in Python): nothing answers there within "
            f"{timeout:g} s ({type(error).__name__}: {error.strerror or error}); start a cluster with `ray "
            "start --head` and pass the address it prints, or leave the address out to start a local Ray instance"
        ) from None


def matching_network(spec: NetworkSpec, fingerprint: dict[str, Any]) -> Network:
    """The network of ``spec`` built here, refused unless its fingerprint is the job's."""
    network = build_network(spec)
    if network.fingerprint != fingerprint:
        differing = sorted(
            k
            for k in {**fingerprint, **network.fingerprint}
            if fingerprint.get(k) != network.fingerprint.get(k)
        )
        raise FeatxError(
            f"this worker's network differs from the job's in {differing} "
            f"({ {k: network.fingerprint.get(k) for k in differing} } here, "
            f"{ {k: fingerprint.get(k) for k in differing} } in the job); refusing to write "
            "its vectors into the job's cache namespace"
        )
    return network


@dataclasses.dataclass(frozen=True)
class RemoteNetwork:
    """The network as the Ray driver holds it: resolved on a worker where it will run (device, measured
    precision, weights digest), never loaded on the driver, so a CPU-only head node can drive GPU workers.

    The job reads what it needs from it (fingerprint, feature count, preprocessing); a batch it is called
    on (a vector that failed its checksum when the job read it back) runs on the cluster too.
    """

    spec: NetworkSpec  # device and precision as resolved on the worker
    fingerprint: dict[str, Any]
    n_features: int
    preprocessing: Preprocessing
    node: str
    pooling: str
    weights_description: str

    @property
    def backbone(self) -> Backbone:
        return get_backbone(self.spec.backbone)

    @property
    def device(self) -> torch.device:
        return torch.device(self.spec.device)

    @property
    def precision(self) -> str:
        return self.spec.precision

    def prepare(self, n_images: int, batch_size: int) -> None:
        """Nothing to prepare here: the network lives on the workers."""

    def submit(self, batch: torch.Tensor) -> PendingVectors:
        """As :meth:`Network.submit`; the vectors are here when this returns."""
        return PendingVectors(torch.from_numpy(self(batch).copy()))  # Ray's arrays are read-only

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        ray = ray_module()
        forward = ray.remote(_forward_on_worker).options(num_gpus=1 if self.device.type == "cuda" else 0)
        return unwrapped(ray, forward.remote(self.spec, self.fingerprint, batch.numpy()))


def resolve_on_worker(spec: NetworkSpec) -> RemoteNetwork:
    network = build_network(spec)
    resolved = spec.replace(device=network.device.type, precision=network.precision)
    return RemoteNetwork(
        resolved,
        network.fingerprint,
        network.n_features,
        network.preprocessing,
        network.node,
        network.pooling,
        network.weights_description,
    )


def _forward_on_worker(spec: NetworkSpec, fingerprint: dict[str, Any], pixels: np.ndarray) -> np.ndarray:
    return matching_network(spec, fingerprint)(torch.from_numpy(pixels))


def unwrapped(ray, reference):
    """``ray.get``, raising a featx error from a worker as itself (one line), not wrapped in Ray's traceback."""
    try:
        return ray.get(reference)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, (FeatxError, OSError, ImportError)):
            raise error.cause from None
        raise
