"""`manage.py agent_turn <agent> <name> "text" [--user USERNAME]`: run a turn from the shell."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from django.core.management.base import BaseCommand

from agents_app.turns.programmatic import send_user_message


class Command(BaseCommand):
    help = "Send a user message to an agent session and run the turn (it streams to connected clients)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("agent", help="agent segment, e.g. chat-agent")
        parser.add_argument("name", help="instance name, e.g. default")
        parser.add_argument("text", help="the user message")
        parser.add_argument("--user", help="owner of the session (default: the anonymous namespace)")

    def handle(self, *args: Any, **options: Any) -> None:
        result = asyncio.run(send_user_message(options["agent"], options["name"], options["text"], username=options["user"]))
        self.stdout.write(json.dumps(result.as_dict()))
        if result.message:
            text = "".join(p.get("text", "") for p in result.message["parts"] if p.get("type") == "text")
            self.stdout.write(text)
