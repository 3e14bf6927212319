from django.contrib import admin
from django.urls import include, path

from agents_app.transport.openai_api import budget, chat_completions, list_models
from agents_app.transport.webhooks import agent_webhook

urlpatterns = [
    path("admin/", admin.site.urls),
    path("agents/", include("agents_app.transport.urls")),
    path("hooks/<str:agent>/<str:name>", agent_webhook, name="agent-webhook"),
    path("v1/chat/completions", chat_completions, name="openai-chat-completions"),
    path("v1/models", list_models, name="openai-models"),
    path("v1/budget", budget, name="gateway-budget"),
    path("", include("agents_app.ui.urls")),
]
