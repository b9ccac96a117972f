"""The route table: path -> method -> handler, and what each path needs.

Every route of the app is mounted in one place (:func:`~.app.create_app`
builds the table); a path may carry a ``prepare`` hook that sees each of its
exchanges first, before auth and routing, so even its 401, 405 and body-limit
answers come in its own shape (``/v1/audio/speech`` answers OpenAI's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .exchange import Exchange, Handler, HTTPError

__all__ = ["Route", "Routes"]


@dataclass
class Route:
    """One path's handlers by method."""

    methods: dict[str, Handler] = field(default_factory=dict)
    #: It synthesizes: it needs the API key and counts in the request metrics.
    synthesis: bool = False
    prepare: Callable[[Exchange], None] | None = None


class Routes:
    """The app's paths; unknown paths are 404, other methods 405."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def mount(
        self,
        path: str,
        method: str,
        handler: Handler,
        *,
        synthesis: bool = False,
        prepare: Callable[[Exchange], None] | None = None,
    ) -> None:
        route = self._routes.setdefault(path, Route())
        if method in route.methods:
            raise ValueError(f"{method} {path} is mounted twice")
        route.methods[method] = handler
        route.synthesis |= synthesis
        route.prepare = prepare or route.prepare

    def get(self, path: str) -> Route | None:
        """``path``'s route; a route mounted as ``/a/*`` takes any last segment (``/a/b``)."""
        return self._routes.get(path) or self._routes.get(path.rpartition("/")[0] + "/*")

    @staticmethod
    def handler(route: Route | None, path: str, method: str) -> Handler:
        """``route``'s handler for ``method``, or the 404 or 405 :class:`HTTPError`.

        The 404 names no path: the caller knows what it asked for, and a path
        echoed back is text an attacker chose.
        """
        if route is None:
            raise HTTPError(404, "not_found", "no such endpoint", close=True)
        handler = route.methods.get(method)
        if handler is None:
            allowed = " or ".join(sorted(route.methods))
            raise HTTPError(
                405, "invalid_request", f"{path} accepts {allowed} only", close=True
            )
        return handler
