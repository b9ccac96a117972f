"""The gateway: one v1 endpoint in front of many workers (docs/gateway.md)."""

from .service import Gateway

__all__ = ["Gateway"]
