from django.apps import AppConfig


class AgentsAppConfig(AppConfig):
    name = "agents_app"
    verbose_name = "Agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from agents_app.storage.connections import watch

        connection_created.connect(watch, dispatch_uid="agents_app.storage.connections.watch")
        from agents_app.storage import query_count

        connection_created.connect(query_count.watch, dispatch_uid="agents_app.storage.query_count.watch")
        # Importing the demo module registers its agent classes with the registry.
        from agents_app import demo_agents  # noqa: F401
        from agents_app.turns.registry import load_configured_agents

        load_configured_agents()
        # The chat page reacts to finished turns: queued messages go out, new chats get a title.
        from agents_app.ui import sending, titles  # noqa: F401
