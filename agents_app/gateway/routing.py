"""Which upstreams a call tries, in order: the Route the call names (`gateway={"id": …}`), else
the agent's Route, else the global Route, else the OPENAI_* settings (the client the caller
made, exactly as without a gateway)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from django.conf import settings
from django.db.models import Prefetch

from agents_app.gateway.models import Provider, Route, RouteEntry
from agents_app.gateway.process_cache import TableCopy

DEFAULT_PROVIDER = "default"


@dataclass(frozen=True)
class Upstream:
    provider: str
    model: str
    # None: use the caller's client (the OPENAI_* settings).
    base_url: str | None = None
    api_key: str = ""
    timeout: float | None = None

    @property
    def uses_default_client(self) -> bool:
        return self.base_url is None


@dataclass(frozen=True)
class Plan:
    upstreams: tuple[Upstream, ...]
    cache_ttl: int

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(u.api_key for u in self.upstreams if u.api_key) + ((settings.OPENAI_API_KEY,) if settings.OPENAI_API_KEY else ())


def _upstream(provider: Provider, model: str) -> Upstream:
    if provider.kind == Provider.Kind.LOCAL:
        base_url, api_key = f"http://127.0.0.1:{settings.AGENTS_LOCAL_MODEL_PORT}/v1", "local"
    else:
        base_url, api_key = provider.base_url, provider.api_key or "unset"
    return Upstream(provider.name, model, base_url, api_key, provider.timeout_seconds or settings.AGENTS_MODEL_TIMEOUT)


@dataclass(frozen=True)
class RouteConfig:
    """An agent's route as read from the database; an entry's empty model means "the model
    the agent asks for"."""

    entries: tuple[Upstream, ...]
    cache_ttl: int

    def plan(self, model: str) -> Plan:
        upstreams = tuple(replace(entry, model=entry.model or model) for entry in self.entries)
        return Plan(upstreams or (Upstream(DEFAULT_PROVIDER, model),), self.cache_ttl)


class UnknownGateway(LookupError):
    pass


@dataclass(frozen=True)
class _Routes:
    """The enabled routes: chosen by agent ("" = the global route) and by name."""

    by_agent: dict[str, RouteConfig]
    by_name: dict[str, RouteConfig]


def _load_routes() -> _Routes:
    enabled_entries = RouteEntry.objects.filter(provider__enabled=True).select_related("provider").order_by("position", "id")
    routes = Route.objects.filter(enabled=True).prefetch_related(Prefetch("entries", queryset=enabled_entries))
    by_agent: dict[str, RouteConfig] = {}
    by_name: dict[str, RouteConfig] = {}
    for route in routes:
        config = RouteConfig(tuple(_upstream(entry.provider, entry.model) for entry in route.entries.all()), route.cache_ttl_seconds)
        if route.name:
            by_name[route.name] = config
        else:
            by_agent[route.agent] = config
    return _Routes(by_agent, by_name)


_routes = TableCopy(_load_routes, sources=(Route, RouteEntry, Provider))


def route_for(agent: str) -> RouteConfig:
    """The agent's own route, else the global one, else the OPENAI_* settings."""
    routes = _routes.get()
    return routes.by_agent.get(agent) or routes.by_agent.get("") or RouteConfig((), settings.AGENTS_GATEWAY_CACHE_TTL)


def named_route(gateway_id: str) -> RouteConfig:
    """The enabled route named `gateway_id`; a typo must not fall back to another route silently."""
    route = _routes.get().by_name.get(gateway_id)
    if route is None:
        raise UnknownGateway(f"Unknown gateway id {gateway_id!r}: no enabled gateway route has that name.")
    return route
