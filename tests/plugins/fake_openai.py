"""The `fake_openai` fixture: a scriptable OpenAI-compatible server on a free local port."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from agents_app.testing.fake_openai import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()
