"""The gateway in the admin: write-only provider keys, the call log, the analytics dashboard
and the log's retention."""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from agents_app.gateway import call_log
from agents_app.gateway.dashboard import percentile
from agents_app.gateway.models import Budget, ModelCall, Provider
from agents_app.gateway.tasks import prune_model_calls

pytestmark = pytest.mark.django_db


def call(**fields: Any) -> ModelCall:
    defaults: dict[str, Any] = {"agent": "chat-agent", "provider": "primary", "model": "gpt-x", "latency_ms": 100, "ttft_ms": 40}
    return ModelCall.objects.create(**{**defaults, **fields})


def test_the_provider_form_never_shows_the_stored_key_and_keeps_it_when_left_empty(admin_client):
    provider = Provider.objects.create(name="openai", base_url="https://api.example.com/v1", api_key="sk-stored-secret-9")
    page = admin_client.get(f"/admin/gateway/provider/{provider.pk}/change/")
    assert page.status_code == 200 and b"sk-stored-secret-9" not in page.content
    response = admin_client.post(
        f"/admin/gateway/provider/{provider.pk}/change/",
        {"name": "openai", "kind": "openai", "base_url": "https://api.example.com/v2", "api_key": "", "timeout_seconds": "", "enabled": "on"},
    )
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == "sk-stored-secret-9" and provider.base_url.endswith("/v2")
    listing = admin_client.get("/admin/gateway/provider/")
    assert b"sk-stored-secret-9" not in listing.content


def test_the_dashboard_renders_charts_and_figures_from_the_log(admin_client, user):
    now = timezone.now()
    for latency in (100, 200, 300, 400):
        call(user=user, latency_ms=latency, input_tokens=10, output_tokens=5, cost=Decimal("0.01"), created_at=now)
    call(agent="support-agent", provider="backup", latency_ms=5, cache_hit=True, input_tokens=10, output_tokens=5, created_at=now - timedelta(days=1))
    call(status=ModelCall.Status.ERROR, error="boom", latency_ms=50, created_at=now - timedelta(days=2))
    Budget.objects.create(user=user, monthly_cost=Decimal("1.00"))
    page = admin_client.get("/admin/gateway/modelcall/dashboard/")
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('<figure class="gateway-chart">') == 5 and "Requests per day" in html and "Cost per day" in html
    assert "<title>chat-agent: 5</title>" in html and "<title>backup: 1</title>" in html  # bars per agent / provider
    assert re.search(r'id="total-requests">6<', html) and re.search(r'id="total-tokens">75<', html)
    assert re.search(r'id="cache-hit-rate">16.7 %<', html)
    # p50 / p95 over the upstream calls that succeeded (the cache hit and the error excluded).
    assert re.search(r'id="latency">200 / 400 ms<', html)
    assert "support-agent" in html and "backup" in html
    assert "alice" in html and "0.04" in html  # budget pace: alice used 0.04 of 1.00


def test_the_call_log_changelist_links_to_the_dashboard(admin_client):
    call()
    page = admin_client.get("/admin/gateway/modelcall/")
    assert page.status_code == 200 and b"/admin/gateway/modelcall/dashboard/" in page.content


def test_the_dashboard_is_for_staff_only(client, user):
    client.force_login(user)
    assert client.get("/admin/gateway/modelcall/dashboard/").status_code == 302


def test_percentiles_use_the_nearest_rank():
    assert percentile([5, 1, 4, 2, 3], 0.5) == 3 and percentile(list(range(1, 101)), 0.95) == 95
    assert percentile([], 0.5) is None


def test_rows_older_than_the_retention_are_pruned(settings):
    settings.AGENTS_GATEWAY_LOG_RETENTION_DAYS = 30
    old = call(created_at=timezone.now() - timedelta(days=31))
    recent = call(created_at=timezone.now() - timedelta(days=29))
    assert prune_model_calls() == 1
    assert list(ModelCall.objects.values_list("pk", flat=True)) == [recent.pk] and old.pk != recent.pk


def test_a_failed_log_write_does_not_raise(monkeypatch):
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(call_log.row_writes, "insert", broken)
    assert call_log.save(call_log.CallRecord(started_at=timezone.now())) is None
