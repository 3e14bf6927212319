from django.urls import path

from agents_app.transport.views import agent_endpoint, search_sessions

urlpatterns = [
    path("search", search_sessions, name="agent-search"),
    path("<str:agent>/<str:name>", agent_endpoint, name="agent-endpoint"),
    path("<str:agent>/<str:name>/<path:rest>", agent_endpoint, name="agent-endpoint-path"),
]
