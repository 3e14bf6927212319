from django.contrib import admin
from django.urls import include, path

from agents_app.transport.webhooks import agent_webhook

urlpatterns = [
    path("admin/", admin.site.urls),
    path("agents/", include("agents_app.transport.urls")),
    path("hooks/<str:agent>/<str:name>", agent_webhook, name="agent-webhook"),
    path("", include("agents_app.ui.urls")),
]
