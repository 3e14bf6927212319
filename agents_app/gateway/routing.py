"""Which upstreams a call tries, in order: the agent's Route, else the global Route, else the
OPENAI_* settings (the client the caller made, exactly as without a gateway)."""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from agents_app.gateway.models import Provider, Route

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


def plan_for(model: str, agent: str) -> Plan:
    route = Route.objects.filter(enabled=True, agent=agent).first() if agent else None
    route = route or Route.objects.filter(enabled=True, agent="").first()
    upstreams: tuple[Upstream, ...] = ()
    if route is not None:
        entries = route.entries.select_related("provider").filter(provider__enabled=True).order_by("position", "id")
        upstreams = tuple(_upstream(entry.provider, entry.model or model) for entry in entries)
    if not upstreams:
        upstreams = (Upstream(DEFAULT_PROVIDER, model),)
    return Plan(upstreams, route.cache_ttl_seconds if route is not None else settings.AGENTS_GATEWAY_CACHE_TTL)
