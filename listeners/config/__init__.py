"""Service configuration: a TOML file, environment variables over it, frozen objects out.

Built once by ``passerelle serve`` and passed down through constructors; nothing else
reads the environment. See :mod:`listeners.config.loading` for the rules and
:data:`ENV_SETTINGS` for the environment variables.
"""

from .environment import ENV_SETTINGS
from .loading import load_config, load_http_config
from .model import (
    AmqpConfig,
    AmqpConsumerConfig,
    AmqpPublishConfig,
    AuthConfig,
    ConfigError,
    ConverterSettings,
    DeliveryConfig,
    DestinationConfig,
    HttpConfig,
    ListenerConfig,
    MllpConfig,
    QueueConfig,
    RouteConfig,
    Secret,
    ServiceConfig,
    TlsConfig,
)

__all__ = [
    "ENV_SETTINGS",
    "AmqpConfig",
    "AmqpConsumerConfig",
    "AmqpPublishConfig",
    "AuthConfig",
    "ConfigError",
    "ConverterSettings",
    "DeliveryConfig",
    "DestinationConfig",
    "HttpConfig",
    "ListenerConfig",
    "MllpConfig",
    "QueueConfig",
    "RouteConfig",
    "Secret",
    "ServiceConfig",
    "TlsConfig",
    "load_config",
    "load_http_config",
]
