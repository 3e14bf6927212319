"""The embedded channel layer: Channels' in-memory layer, with its expiry sweep rationed.

`InMemoryChannelLayer.receive` walks every channel's queue and every group membership
looking for expired entries before each message it hands out. With hundreds of sockets
receiving a stream frame every few milliseconds that sweep, not the delivery, was a tenth
of the server's CPU. Messages expire after `expiry` seconds (60 here) and memberships after
a day, so sweeping at most once per `SWEEP_INTERVAL_SECONDS` drops them only that much later.
"""
from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer

SWEEP_INTERVAL_SECONDS = 1.0


class LocalChannelLayer(InMemoryChannelLayer):
    """One process's channel layer (no Redis): the embedded default."""

    _last_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_INTERVAL_SECONDS:
            return
        self._last_sweep = now
        super()._clean_expired()

    async def group_members(self, group: str) -> list[str]:
        """The channels in `group` now (see broadcast.anyone_else_listening)."""
        return list(self.groups.get(group, ()))
