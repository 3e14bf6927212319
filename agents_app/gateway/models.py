"""Gateway configuration (providers, routes, prices, limits, budgets) and the call log."""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class Provider(models.Model):
    """An upstream model service. Its API key stays on the server: never shown back in the
    admin, never sent to a client, never logged."""

    class Kind(models.TextChoices):
        OPENAI_COMPATIBLE = "openai", "OpenAI-compatible (chat completions)"
        LOCAL = "local", "Bundled local model"

    name = models.SlugField(max_length=80, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.OPENAI_COMPATIBLE)
    base_url = models.URLField(max_length=500, blank=True, help_text="e.g. https://api.openai.com/v1 (ignored for the local model)")
    api_key = models.CharField(max_length=500, blank=True)
    timeout_seconds = models.FloatField(null=True, blank=True, help_text="Empty: AGENTS_MODEL_TIMEOUT")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Route(models.Model):
    """Where model calls go: an ordered fallback list of (provider, model). A route with an
    agent applies to that agent's calls; one with neither agent nor name is the global
    default; a named one serves only the calls that ask for it (`gateway={"id": name}`, as
    Cloudflare AI Gateway's `gateway.id` picks a gateway)."""

    name = models.SlugField(max_length=80, blank=True, default="", help_text="Gateway id calls choose this route by; empty = chosen by agent")
    agent = models.SlugField(max_length=120, blank=True, help_text="Agent URL segment; empty = every other agent")
    cache_ttl_seconds = models.PositiveIntegerField(default=0, help_text="Serve identical requests from the cache for this long; 0 = off")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name", "agent"]
        constraints = [
            models.UniqueConstraint(fields=["agent"], condition=models.Q(name=""), name="gateway_route_one_per_agent"),
            models.UniqueConstraint(fields=["name"], condition=~models.Q(name=""), name="gateway_route_unique_name"),
        ]

    def __str__(self) -> str:
        return f"id {self.name}" if self.name else self.agent or "(global)"

    def clean(self) -> None:
        if self.name and self.agent:
            raise ValidationError("A named route is chosen by its id, not by agent: leave the agent empty.")


class RouteEntry(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="entries")
    position = models.PositiveIntegerField(default=0, help_text="Tried in ascending order")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="route_entries")
    model = models.CharField(max_length=200, blank=True, help_text="Model id at this provider; empty = the model the agent asked for")

    class Meta:
        ordering = ["route", "position", "id"]
        verbose_name_plural = "route entries"

    def __str__(self) -> str:
        return f"{self.position}: {self.provider} {self.model or '(agent model)'}"


class ModelPrice(models.Model):
    """Price per million tokens of a model id (as the provider names it)."""

    model = models.CharField(max_length=200, unique=True)
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        return (self.input_per_million * input_tokens + self.output_per_million * output_tokens) / Decimal(1_000_000)


class RateLimit(models.Model):
    """Requests per minute and tokens per day for the calls it matches: a user's calls (user
    set), an agent's calls (agent set), a user on an agent (both), or — neither set — the
    default applied to every user separately."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    agent = models.SlugField(max_length=120, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["agent", "user"]

    def __str__(self) -> str:
        who = [part for part in (str(self.user) if self.user_id else "", self.agent) if part]
        return " on ".join(who) or "every user"


class Budget(models.Model):
    """A monthly token and/or cost budget of one user (user empty: every user's default)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    monthly_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    monthly_cost = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)

    def __str__(self) -> str:
        return str(self.user) if self.user_id else "every user"


class ModelCall(models.Model):
    """One model call as the gateway saw it."""

    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"
        REFUSED = "refused"  # a rate limit or budget stopped it before any upstream call
        ABORTED = "aborted"  # the turn was cancelled while the call ran

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    agent = models.CharField(max_length=120, blank=True, db_index=True)
    session_id = models.BigIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider = models.CharField(max_length=80, blank=True, help_text="The provider that served (or last failed)")
    model = models.CharField(max_length=200, blank=True)
    fallbacks = models.JSONField(default=list, blank=True, help_text="Providers tried first, with their errors")
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to first token")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal("0"))
    cache_hit = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OK)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"], name="modelcall_user_time")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.agent} {self.provider}/{self.model}"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
