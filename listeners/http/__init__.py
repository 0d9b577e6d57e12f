"""HTTP: the service's API (conversion, health, readiness, metrics), the workers' probes,
and the embedded server both run on."""

from .api import ApiBackend, ProbeBackend, create_app, create_probe_app, operation_outcome
from .server import EmbeddedHttpServer

__all__ = [
    "ApiBackend",
    "EmbeddedHttpServer",
    "ProbeBackend",
    "create_app",
    "create_probe_app",
    "operation_outcome",
]
