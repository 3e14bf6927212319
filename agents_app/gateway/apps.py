from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "agents_app.gateway"
    label = "gateway"
    verbose_name = "AI gateway"
    default_auto_field = "django.db.models.BigAutoField"
