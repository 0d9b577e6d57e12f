"""The service's HTTP API (conversion, health, readiness, metrics)."""

from .api import ApiBackend, create_app, operation_outcome

__all__ = ["ApiBackend", "create_app", "operation_outcome"]
