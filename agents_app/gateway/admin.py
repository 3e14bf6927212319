"""Admin for the gateway: providers (keys write-only), routes with their ordered fallbacks,
prices, rate limits, budgets, the read-only call log and the analytics dashboard."""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from agents_app.gateway import dashboard
from agents_app.gateway.models import Budget, ModelCall, ModelPrice, Provider, RateLimit, Route, RouteEntry


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(
        required=False, max_length=500, assume_scheme="https", help_text="e.g. https://api.openai.com/v1 (ignored for the local model)"
    )
    # Write-only: the stored key is never rendered back into the page.
    api_key = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), help_text="Leave empty to keep the stored key."
    )

    class Meta:
        model = Provider
        fields = ("name", "kind", "base_url", "api_key", "timeout_seconds", "enabled")

    def clean_api_key(self) -> str:
        return self.cleaned_data["api_key"] or (self.instance.api_key if self.instance.pk else "")


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ("name", "kind", "base_url", "has_key", "timeout_seconds", "enabled")
    list_filter = ("kind", "enabled")

    @admin.display(boolean=True, description="Key stored")
    def has_key(self, obj: Provider) -> bool:
        return bool(obj.api_key)


class RouteEntryInline(admin.TabularInline):
    model = RouteEntry
    extra = 1
    ordering = ("position", "id")


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ("__str__", "fallback_chain", "cache_ttl_seconds", "enabled")
    inlines = (RouteEntryInline,)

    @admin.display(description="Tried in order")
    def fallback_chain(self, obj: Route) -> str:
        return " → ".join(f"{e.provider.name}/{e.model or '(agent model)'}" for e in obj.entries.select_related("provider"))


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("model", "input_per_million", "output_per_million")
    search_fields = ("model",)


@admin.register(RateLimit)
class RateLimitAdmin(admin.ModelAdmin):
    list_display = ("__str__", "requests_per_minute", "tokens_per_day")


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("__str__", "monthly_tokens", "monthly_cost")


@admin.register(ModelCall)
class ModelCallAdmin(admin.ModelAdmin):
    change_list_template = "admin/gateway/modelcall/change_list.html"
    list_display = ("created_at", "agent", "user", "provider", "model", "status", "cache_hit", "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "cost")
    list_filter = ("status", "cache_hit", "provider", "agent")
    search_fields = ("agent", "model", "provider", "request_id", "error")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        return [path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="gateway_dashboard"), *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        try:
            days = min(max(int(request.GET.get("days", "30")), 1), 366)
        except ValueError:
            days = 30
        context = {**self.admin_site.each_context(request), "title": "Gateway analytics", "opts": self.model._meta, **dashboard.build(days)}
        return TemplateResponse(request, "admin/gateway/dashboard.html", context)
