"""Analytics of the call log for the admin dashboard: per day, per agent, per provider,
latency percentiles, cache hit rate and budget pace, drawn as server-side SVG (no script,
no CDN)."""
from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from agents_app.gateway import limits
from agents_app.gateway.models import Budget, ModelCall

CHART_WIDTH = 640
MAX_AXIS_LABELS = 6
CHART_HEIGHT = 180
_AXIS = 28


@dataclass(frozen=True)
class Group:
    label: str
    requests: int
    tokens: int
    cost: Decimal


def percentile(values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


def _grouped(calls: QuerySet[ModelCall], field: str) -> list[Group]:
    rows = (
        calls.values(field)
        .annotate(requests=Count("id"), input=Sum("input_tokens"), output=Sum("output_tokens"), cost=Sum("cost"))
        .order_by(field)
    )
    return [
        Group(str(row[field] or "—"), row["requests"], (row["input"] or 0) + (row["output"] or 0), row["cost"] or Decimal("0"))
        for row in rows
    ]


def label_step(count: int, most: int = MAX_AXIS_LABELS) -> int:
    """Label every n-th bar so that at most `most` labels share the axis."""
    return max(1, math.ceil(count / most))


def bar_chart(title: str, points: list[tuple[str, float]], unit: str = "") -> SafeString:
    """A bar chart as inline SVG. The axis labels a few bars only (a 30-day chart gets about
    six dates); every bar's value shows on hover or keyboard focus of its column (and as
    its tooltip)."""
    top = max((value for _, value in points), default=0) or 1
    slot = (CHART_WIDTH - _AXIS) / max(len(points), 1)
    step = label_step(len(points))
    bars = []
    for index, (label, value) in enumerate(points):
        height = (CHART_HEIGHT - 2 * _AXIS) * value / top
        x = _AXIS + index * slot + slot * 0.1
        y = CHART_HEIGHT - _AXIS - height
        centre = x + slot * 0.4
        shown = label if index % step == 0 else ""
        bars.append((
            f"{label}: {value:g}{unit}", f"{_AXIS + index * slot:.1f}", f"{slot:.1f}", f"{CHART_HEIGHT - _AXIS:.0f}",
            f"{x:.1f}", f"{y:.1f}", f"{slot * 0.8:.1f}", f"{height:.1f}",
            f"{min(max(centre, 30), CHART_WIDTH - 30):.1f}", f"{max(y - 4, 24):.1f}", f"{value:g}{unit}",
            f"{centre:.1f}", shown,
        ))
    body = format_html_join(
        "",
        '<g class="column" tabindex="0" aria-label="{0}"><title>{0}</title>'
        '<rect x="{1}" y="0" width="{2}" height="{3}" class="hover-area"/>'
        '<rect x="{4}" y="{5}" width="{6}" height="{7}" class="bar"/>'
        '<text x="{8}" y="{9}" text-anchor="middle" class="value">{10}</text>'
        '<text x="{11}" y="' + str(CHART_HEIGHT - 10) + '" text-anchor="middle" class="tick">{12}</text></g>',
        bars,
    )
    return format_html(
        '<figure class="gateway-chart"><figcaption>{}</figcaption>'
        '<svg viewBox="0 0 {} {}" width="100%" role="group" aria-label="{}">'
        '<text x="4" y="14" class="tick">{}{}</text>'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" class="axis"/>{}</svg></figure>',
        title, CHART_WIDTH, CHART_HEIGHT, title, f"{top:g}", unit,
        _AXIS, CHART_HEIGHT - _AXIS, CHART_WIDTH, CHART_HEIGHT - _AXIS, body,
    )


def _budget_pace(now: datetime) -> list[dict[str, Any]]:
    """Month-to-date use of every budgeted user, against where an even pace would be."""
    days_in_month = calendar.monthrange(now.year, now.month)[1]
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elapsed = max((now - month_start) / timedelta(days=days_in_month), 1e-6)
    default = Budget.objects.filter(user__isnull=True).first()
    users = get_user_model().objects.filter(pk__in=Budget.objects.exclude(user=None).values("user"))
    if default is not None:
        users = get_user_model().objects.filter(pk__in=ModelCall.objects.filter(created_at__gte=month_start).exclude(user=None).values("user")) | users
    rows = []
    for user in users.distinct().order_by("username"):
        status = limits.budget_status(user.pk, now)
        for kind in ("tokens", "cost"):
            budget = status[kind]["budget"]
            if budget is None:
                continue
            used, budget_value = float(status[kind]["used"]), float(budget)
            rows.append({
                "user": user.get_username(), "kind": kind, "used": status[kind]["used"], "budget": budget,
                "used_percent": (percent := round(100 * used / budget_value, 1) if budget_value else 100.0),
                "bar_percent": min(percent, 100.0),
                "pace_percent": round(100 * elapsed, 1),
                "projected": round(used / elapsed, 4 if kind == "cost" else None),
                "over_pace": used > budget_value * elapsed,
            })
    return rows


def build(days: int = 30, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    calls = ModelCall.objects.filter(created_at__gte=since)
    per_day = {row.label: row for row in _grouped(calls.annotate(day=TruncDate("created_at")), "day")}
    day_labels = [(since + timedelta(days=offset)).date().isoformat() for offset in range(days)]
    daily = [per_day.get(label, Group(label, 0, 0, Decimal("0"))) for label in day_labels]
    short = [label[5:] for label in day_labels]
    per_agent, per_provider = _grouped(calls, "agent"), _grouped(calls, "provider")
    served = calls.filter(status=ModelCall.Status.OK)
    latencies = list(served.filter(cache_hit=False).values_list("latency_ms", flat=True))
    first_tokens = [v for v in served.filter(cache_hit=False).values_list("ttft_ms", flat=True) if v is not None]
    total = calls.count()
    hits = calls.filter(cache_hit=True).count()
    totals = calls.aggregate(cost=Sum("cost"), i=Sum("input_tokens"), o=Sum("output_tokens"))
    return {
        "days": days,
        "since": since,
        "total_requests": total,
        "total_tokens": (totals["i"] or 0) + (totals["o"] or 0),
        "total_cost": totals["cost"] or Decimal("0"),
        "errors": calls.filter(status=ModelCall.Status.ERROR).count(),
        "refused": calls.filter(status=ModelCall.Status.REFUSED).count(),
        "cache_hit_rate": round(100 * hits / total, 1) if total else None,
        "latency_p50": percentile(latencies, 0.5),
        "latency_p95": percentile(latencies, 0.95),
        "ttft_p50": percentile(first_tokens, 0.5),
        "ttft_p95": percentile(first_tokens, 0.95),
        "per_agent": per_agent,
        "per_provider": per_provider,
        "charts": [
            bar_chart("Requests per day", list(zip(short, [g.requests for g in daily], strict=True))),
            bar_chart("Tokens per day", list(zip(short, [g.tokens for g in daily], strict=True))),
            bar_chart("Cost per day", list(zip(short, [float(g.cost) for g in daily], strict=True)), " $"),
            bar_chart("Requests per agent", [(g.label, g.requests) for g in per_agent]),
            bar_chart("Requests per provider", [(g.label, g.requests) for g in per_provider]),
        ],
        "budget_pace": _budget_pace(now),
    }
