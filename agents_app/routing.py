"""WebSocket routes of both front doors: the agent protocol (transport/) and the chat page (ui/).
They sit side by side here, above both, so neither imports the other."""
from django.urls import re_path

from agents_app.transport.consumer import AgentConsumer
from agents_app.ui.consumer import ChatPageConsumer

websocket_urlpatterns = [
    re_path(r"^ui/ws/(?P<agent>[^/]+)/(?P<name>[^/]+)/$", ChatPageConsumer.as_asgi()),
    re_path(r"^agents/(?P<agent>[^/]+)/(?P<name>[^/]+)(?:/(?P<rest>.*))?$", AgentConsumer.as_asgi()),
]
