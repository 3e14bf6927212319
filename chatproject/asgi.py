"""ASGI entry point: HTTP through Django, WebSockets through the agent consumer."""
from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from agents_app.transport.auth import AgentAuthMiddleware, socket_session_stack  # noqa: E402
from agents_app.transport.origins import WebSocketOriginGuard  # noqa: E402
from agents_app.routing import websocket_urlpatterns  # noqa: E402
from chatproject.autobahn_log_arguments import format_log_arguments_on_demand  # noqa: E402
from chatproject.gc_tuning import record_collections, tune_for_serving  # noqa: E402
from chatproject.socket_writes import send_writes_at_once  # noqa: E402

# The app serves its own static files (htmx and its extension, CSS) unless a front server
# does (AGENTS_SERVE_STATIC=false): the quick start and single-process deployments need no CDN.
http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.AGENTS_SERVE_STATIC else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # Host and Origin are checked before anything reads the session cookie.
        "websocket": WebSocketOriginGuard(socket_session_stack(AgentAuthMiddleware(URLRouter(websocket_urlpatterns)))),
    }
)

format_log_arguments_on_demand()
if settings.AGENTS_DIRECT_SOCKET_WRITES:
    send_writes_at_once()
if settings.AGENTS_GC_FREEZE:
    tune_for_serving()
if settings.AGENTS_GC_STATS:
    record_collections(settings.AGENTS_GC_STATS)
