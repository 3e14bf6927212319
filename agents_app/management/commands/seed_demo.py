"""Create the demo agents and a demo login, and print how to use them."""
from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from agents_app.turns.registry import sync_agent_records
from agents_app.storage.models import ApiToken


class Command(BaseCommand):
    help = "Register the agent classes in the database and create the demo user (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        records = sync_agent_records()
        credentials = settings.DATA_DIR / "demo-login.txt"
        User = get_user_model()
        if not User.objects.filter(username="demo").exists() or not credentials.exists():
            password = secrets.token_urlsafe(9)
            user, _ = User.objects.get_or_create(username="demo", defaults={"is_staff": True, "is_superuser": True})
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            _, api_token = ApiToken.issue(user, "demo")
            # Kept beside the embedded database (never in the repository) so later runs can print it.
            credentials.write_text(f"username: demo\npassword: {password}\napi token: {api_token}\n")
            credentials.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(f"Agents: {', '.join(r.slug for r in records)}"))
        self.stdout.write(f"Log in at http://127.0.0.1:8000/ (admin at /admin/) with:\n{credentials.read_text()}")
