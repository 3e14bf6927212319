"""Rate limits (requests per minute, tokens per day) and monthly budgets, enforced before any
upstream call from the call log. Requests per minute are also counted by an atomic window
counter (agents_app/limits.py), so a burst of parallel calls cannot overshoot them; token
limits and budgets count finished calls."""
from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from agents_app import limits as agent_limits
from agents_app.gateway.models import Budget, ModelCall, RateLimit
from agents_app.gateway.process_cache import TableCopy
from agents_app.providers.errors import ModelError


class LimitExceeded(ModelError):
    """A limit or budget refused the call; `retry_after` is in seconds."""

    def __init__(self, message: str, retry_after: int, *, code: str = "rate_limit_exceeded") -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.code = code


def _day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(now: datetime) -> datetime:
    return _day_start(now).replace(day=1)


def _next_month(now: datetime) -> datetime:
    start = _month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


def _tokens(calls: QuerySet[ModelCall]) -> int:
    totals = calls.filter(cache_hit=False).aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"))
    return (totals["i"] or 0) + (totals["o"] or 0)


def _counted(limit: RateLimit, user_id: int | None) -> QuerySet[ModelCall]:
    calls = ModelCall.objects.exclude(status=ModelCall.Status.REFUSED)
    if limit.agent:
        calls = calls.filter(agent=limit.agent)
    if limit.user_id or not limit.agent:
        # A user's own limit, or the default that applies to every user separately.
        calls = calls.filter(user_id=limit.user_id or user_id)
    return calls


def _matching_rate_limits(user_id: int | None, agent: str) -> QuerySet[RateLimit]:
    user_match = Q(user__isnull=True) | (Q(user_id=user_id) if user_id is not None else Q(pk__in=[]))
    return RateLimit.objects.filter(user_match, Q(agent="") | Q(agent=agent))


def _check_rate_limits(user_id: int | None, agent: str, now: datetime, reserve: bool) -> None:
    for limit in _matching_rate_limits(user_id, agent):
        calls = _counted(limit, user_id)
        if limit.requests_per_minute is not None:
            recent = calls.filter(created_at__gte=now - timedelta(minutes=1))
            # The call log only shows calls that already started; the atomic counter also
            # holds back parallel calls admitted in the same instant.
            slot_wait = reserve and agent_limits.take(f"gateway:{limit.pk}:{user_id}", limit.requests_per_minute, 60)
            if slot_wait or recent.count() >= limit.requests_per_minute:
                oldest = recent.order_by("created_at").values_list("created_at", flat=True).first() or now
                wait = math.ceil(60 - (now - oldest).total_seconds())
                raise LimitExceeded(f"Rate limit reached: {limit.requests_per_minute} requests per minute ({limit}). Try again in {max(1, wait)} s.", wait)
        if limit.tokens_per_day is not None and _tokens(calls.filter(created_at__gte=_day_start(now))) >= limit.tokens_per_day:
            wait = math.ceil((_day_start(now) + timedelta(days=1) - now).total_seconds())
            raise LimitExceeded(f"Daily token limit reached: {limit.tokens_per_day} tokens per day ({limit}). It resets at midnight UTC.", wait)


def budget_for(user_id: int | None) -> Budget | None:
    if user_id is None:
        return None
    return Budget.objects.filter(user_id=user_id).first() or Budget.objects.filter(user__isnull=True).first()


def budget_status(user_id: int | None, now: datetime | None = None, budget: Budget | None = None) -> dict[str, Any]:
    """This month's use against the user's budget (what `GET /v1/budget` shows)."""
    now = now or timezone.now()
    budget = budget or budget_for(user_id)
    calls = ModelCall.objects.filter(user_id=user_id, created_at__gte=_month_start(now)).exclude(status=ModelCall.Status.REFUSED)
    tokens_used = _tokens(calls)
    cost_used = calls.aggregate(c=Sum("cost"))["c"] or Decimal("0")
    token_budget = budget.monthly_tokens if budget else None
    cost_budget = budget.monthly_cost if budget else None
    return {
        "month": now.strftime("%Y-%m"),
        "resetsAt": _next_month(now).isoformat(),
        "tokens": {"used": tokens_used, "budget": token_budget, "remaining": None if token_budget is None else max(0, token_budget - tokens_used)},
        "cost": {
            "used": str(cost_used.quantize(Decimal("0.000001"))),
            "budget": None if cost_budget is None else str(cost_budget),
            "remaining": None if cost_budget is None else str(max(Decimal("0"), cost_budget - cost_used).quantize(Decimal("0.000001"))),
        },
    }


def _check_budget(user_id: int | None, now: datetime) -> None:
    budget = budget_for(user_id)
    if budget is None:
        return
    status = budget_status(user_id, now, budget)
    wait = math.ceil((_next_month(now) - now).total_seconds())
    if status["tokens"]["remaining"] == 0:
        raise LimitExceeded(f"Monthly token budget used up ({status['tokens']['budget']} tokens). It renews on {_next_month(now):%Y-%m-%d}.", wait, code="budget_exceeded")
    if status["cost"]["remaining"] is not None and Decimal(status["cost"]["remaining"]) <= 0:
        raise LimitExceeded(f"Monthly cost budget used up ({status['cost']['budget']}). It renews on {_next_month(now):%Y-%m-%d}.", wait, code="budget_exceeded")


def _load_rate_limit_scopes() -> frozenset[tuple[int | None, str]]:
    return frozenset(RateLimit.objects.values_list("user_id", "agent"))


def _load_budget_owners() -> frozenset[int | None]:
    return frozenset(Budget.objects.values_list("user_id", flat=True))


# (user id, agent) of every rate limit, None and "" meaning every user and every agent.
_rate_limit_scopes = TableCopy(_load_rate_limit_scopes, sources=(RateLimit,))
# The users with a budget of their own; None when there is a default for every user.
_budget_owners = TableCopy(_load_budget_owners, sources=(Budget,))


def applies_to(user_id: int | None, agent: str) -> bool:
    """Whether any rate limit or budget concerns this user's calls to this agent."""
    rate_limit_scopes = _rate_limit_scopes.get()
    if any(scope in rate_limit_scopes for scope in itertools.product({None, user_id}, {"", agent})):
        return True
    return user_id is not None and not {None, user_id}.isdisjoint(_budget_owners.get())


def check(user_id: int | None, agent: str, now: datetime | None = None, *, reserve: bool = False) -> None:
    """Raise LimitExceeded when a rate limit or the user's budget forbids another call.
    `reserve` (the model call itself) also takes a slot of the requests-per-minute counter."""
    now = now or timezone.now()
    _check_rate_limits(user_id, agent, now, reserve)
    _check_budget(user_id, now)
