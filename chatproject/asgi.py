"""ASGI entry point: HTTP through Django, WebSockets through the agent consumer."""
from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from agents_app.transport.auth import AgentAuthMiddleware  # noqa: E402
from agents_app.transport.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SessionMiddlewareStack(AgentAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
