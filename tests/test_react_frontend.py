"""The example React app (examples/react-chat: the official `useAgent` and `useAgentChat`
hooks, bundled by esbuild) served from its own origin, driven in Debian's Chromium against a
live daphne that lists that origin in AGENTS_CORS_ALLOWED_ORIGINS, as a developer running
`npm start` beside `make run` would. A second copy on an origin that is not listed gets
nothing, over HTTP or WebSocket."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agents_app.turns.instances import resolve_session
from agents_app.storage import client_messages
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import user_message
from tests.plugins.browser import log_in
from tests.plugins.live_server import free_port, start_live_server
from tests.test_browser_ui import ARTIFACTS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "react-chat"


@pytest.fixture(scope="session")
def example_bundle() -> Path:
    """`npm run build` of the example (its dependencies come from tests/prepare_environment.sh)."""
    if not (EXAMPLE / "node_modules" / ".bin" / "esbuild").exists():
        pytest.fail("examples/react-chat has no node_modules: run tests/prepare_environment.sh")
    subprocess.run(["npm", "run", "--silent", "build"], cwd=EXAMPLE, check=True, timeout=300, env={**os.environ, "NO_COLOR": "1"})
    return EXAMPLE / "public"


class StaticSite:
    """The built app on its own port, as a static file server or a dev server would serve it."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.origin = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
        pass


@pytest.fixture
def sites(example_bundle: Path) -> Iterator[tuple[StaticSite, StaticSite]]:
    """(the listed frontend, an unlisted copy on another port)."""
    listed, unlisted = StaticSite(example_bundle), StaticSite(example_bundle)
    yield listed, unlisted
    listed.stop()
    unlisted.stop()


@pytest.fixture
def server(model: Any, transactional_db: Any, sites: tuple[StaticSite, StaticSite]) -> Iterator[Any]:
    live = start_live_server(model.base_url, {"AGENTS_CORS_ALLOWED_ORIGINS": sites[0].origin})
    yield live
    live.stop()


@pytest.fixture
def open_app(token: str, server: Any, sites: tuple[StaticSite, StaticSite], browser: Any) -> Any:  # noqa: F811
    """The app on a site, connected with Alice's API token to conversation `name`. (The
    database is written before Playwright's event loop starts: Django refuses ORM calls
    from a thread with a running loop.)"""

    def open_page(name: str = "react", *, site: StaticSite | None = None, use_cookie: bool = False, watch: Any = None, **context_options: Any) -> Any:
        page = browser.new_context(**context_options).new_page()
        if watch is not None:
            watch(page)
        if use_cookie:  # signed in on the Django site, same host, another port: the same site
            log_in(page, server.url)
        page.goto(f"{(site or sites[0]).origin}/")
        page.fill("input[name=server]", server.url)
        if use_cookie:
            page.check("input[name=useCookie]")
        else:
            page.fill("input[name=token]", token)
        page.fill("input[name=name]", name)
        page.click("button[type=submit]")
        return page

    return open_page


def connected(page: Any) -> Any:
    page.wait_for_selector(".status[data-connection=connected]", timeout=15000)
    return page


def send(page: Any, text: str) -> None:
    page.fill("input[name=message]", text)
    page.keyboard.press("Enter")


def assistant_text(page: Any) -> str:
    return page.inner_text(".message.assistant >> nth=-1 >> .text") if page.locator(".message.assistant .text").count() else ""


def settled_text(page: Any, quiet_ms: int = 500, timeout_ms: int = 10000) -> str:
    """The last answer's text once it has not changed for `quiet_ms`."""
    text, waited = assistant_text(page), 0
    while waited < timeout_ms:
        page.wait_for_timeout(quiet_ms)
        waited += quiet_ms
        now = assistant_text(page)
        if now == text:
            return text
        text = now
    raise AssertionError(f"the answer kept changing for {timeout_ms} ms after the stop")


def wait_idle(page: Any, timeout: float = 20000) -> None:
    page.wait_for_selector(".status[data-busy=no]", timeout=timeout)


def test_a_text_turn_streams_with_its_reasoning_from_another_origin(open_app, model):
    model.script(Reply.with_reasoning("The user greets me, so I greet back.", "Hello from the Django agent, across origins.", delay=0.05))
    page = connected(open_app())
    send(page, "Hello?")
    page.wait_for_selector(".message.user >> text=Hello?")
    page.wait_for_function("document.querySelector('.message.assistant .text')?.innerText.endsWith('across origins.')", timeout=15000)
    wait_idle(page)
    assert page.inner_text(".message.assistant .reasoning").startswith("Thinking")
    assert "greet back." in page.locator(".message.assistant .reasoning p").text_content()
    page.screenshot(path=str(ARTIFACTS / "react-chat-text-turn.png"), full_page=True)


SECRET = "Alice's private note that no other site may read"


@pytest.fixture
def private_conversation(user: Any) -> None:
    session = resolve_session("chat-agent", "private", user)
    client_messages.upsert(session, [user_message(SECRET, "m1")], move_leaf=True)


def test_the_signed_in_session_cookie_works_from_the_same_site(private_conversation, open_app, model):
    model.script(Reply.text("Hello again, Alice."))
    page = connected(open_app("private", use_cookie=True))
    page.wait_for_selector(f".message.user >> text={SECRET}")  # get-messages sent the cookie
    send(page, "Hi")
    page.wait_for_selector(".message.assistant .text >> text=Hello again, Alice.", timeout=15000)


def ask_for_tool(open_app: Any, model: Any, prompt: str, call: ToolCallSpec, then: str, **context_options: Any) -> Any:
    """A page that asked `prompt`; the model calls the tool, then answers `then`."""
    model.script(Reply.tool_calls([call]), Reply.text(then))
    page = connected(open_app(**context_options))
    send(page, prompt)
    return page


def tool_card(page: Any, name: str, state: str) -> Any:
    return page.wait_for_selector(f".tool[data-tool={name}][data-state={state}]", timeout=15000)


def wait_answer(page: Any, text: str) -> None:
    page.wait_for_selector(f".message.assistant .text >> text={text}", timeout=15000)


def test_a_tool_that_needs_approval_runs_after_approve(open_app, model):
    page = ask_for_tool(open_app, model, "Delete notes.txt", ToolCallSpec("deleteFile", json.dumps({"path": "notes.txt"})), "I deleted notes.txt for you.")
    tool_card(page, "deleteFile", "approval-requested")
    page.screenshot(path=str(ARTIFACTS / "react-chat-approval.png"), full_page=True)
    page.click("button.approve")
    assert '"deleted": true' in tool_card(page, "deleteFile", "output-available").inner_text()
    wait_answer(page, "I deleted notes.txt for you.")


def test_a_denied_tool_does_not_run(open_app, model):
    page = ask_for_tool(open_app, model, "Delete keep.txt", ToolCallSpec("deleteFile", json.dumps({"path": "keep.txt"})), "Understood, I kept it.")
    tool_card(page, "deleteFile", "approval-requested")
    page.click("button.deny")
    tool_card(page, "deleteFile", "output-denied")
    wait_answer(page, "Understood, I kept it.")


def test_a_browser_tool_is_answered_by_on_tool_call(open_app, model):
    page = ask_for_tool(open_app, model, "What is my time zone?", ToolCallSpec("getUserTimezone"), "You are on Paris time.", timezone_id="Europe/Paris")
    assert "Europe/Paris" in tool_card(page, "getUserTimezone", "output-available").inner_text()
    wait_answer(page, "You are on Paris time.")


def test_data_parts_of_a_server_tool_are_shown(open_app, model):
    page = ask_for_tool(open_app, model, "Research Django", ToolCallSpec("research", json.dumps({"topic": "Django"})), "Here is what I found.")
    page.wait_for_selector(".data.progress", timeout=15000)
    wait_answer(page, "Here is what I found.")
    assert "Summarising" in page.inner_text(".data.progress")
    assert page.locator(".data.citation").count() == 2


def test_regenerate_keeps_both_answers_behind_a_branch_pager(open_app, model):
    model.script(Reply.text("First answer."), Reply.text("Second answer."))
    page = connected(open_app())
    send(page, "Say something")
    wait_answer(page, "First answer.")
    wait_idle(page)
    page.click("button.regenerate")
    wait_answer(page, "Second answer.")
    page.wait_for_selector(".message.assistant .branches .position >> text=2/2", timeout=15000)
    page.click(".message.assistant .branches button.older")
    wait_answer(page, "First answer.")
    assert page.inner_text(".message.assistant .branches .position") == "1/2"


def test_a_reload_in_the_middle_of_an_answer_resumes_it_to_the_last_token(open_app, model):
    words = [f"token{i}" for i in range(120)]
    model.script(Reply.text(" ".join(words), delay=0.04))
    page = connected(open_app())
    send(page, "Stream a long answer")
    page.wait_for_function("(document.querySelector('.message.assistant .text')?.innerText || '').includes('token10 ')", timeout=15000)
    page.reload()
    connected(page)
    page.wait_for_function("(document.querySelector('.message.assistant .text')?.innerText || '').endsWith('token119')", timeout=30000)
    wait_idle(page)
    assert assistant_text(page).split() == words
    assert page.locator(".message.assistant").count() == 1


def test_stop_cancels_the_answer_mid_stream(open_app, model):
    words = [f"word{i}" for i in range(200)]
    model.script(Reply.text(" ".join(words), delay=0.05))
    page = connected(open_app())
    send(page, "Count slowly")
    page.wait_for_function("(document.querySelector('.message.assistant .text')?.innerText || '').includes('word5 ')", timeout=15000)
    page.click("button.stop")
    wait_idle(page)
    assert model.wait_for_disconnect(timeout=10)  # the upstream call was cut, not left running
    # The stored partial may hold a word or two the page had not drawn at the click (the
    # final transcript replaces the local copy), so read the answer once it has settled.
    stopped_at = settled_text(page).split()
    assert 5 < len(stopped_at) < len(words) and stopped_at == words[: len(stopped_at)]
    page.wait_for_timeout(1000)  # nothing more arrives after the stop
    assert assistant_text(page).split() == stopped_at


def test_an_origin_that_is_not_listed_gets_no_data_over_http_or_websocket(private_conversation, token, open_app, sites, server):
    secret = SECRET
    listed = connected(open_app("private"))
    listed.wait_for_selector(f".message.user >> text={secret}")  # the listed frontend reads it

    frames: list[str] = []

    def record_socket_frames(page: Any) -> None:
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))

    page = open_app("private", site=sites[1], watch=record_socket_frames)
    page.wait_for_selector(".fatal", timeout=15000)
    assert "Failed to fetch" in page.inner_text(".fatal")
    probe = page.evaluate(
        """async ({server, token}) => {
            const http = await fetch(`${server}/agents/chat-agent/private/get-messages?token=${token}`)
                .then((r) => r.text(), (e) => `refused: ${e.message}`);
            const ws = await new Promise((resolve) => {
                const received = [];
                let opened = false;
                const socket = new WebSocket(`${server.replace('http', 'ws')}/agents/chat-agent/private?token=${token}`);
                socket.onopen = () => { opened = true; };
                socket.onmessage = (event) => received.push(event.data);
                socket.onclose = () => resolve({opened, received});
                setTimeout(() => resolve({timeout: true, received}), 10000);
            });
            return {http, ws};
        }""",
        {"server": server.url, "token": token},
    )
    assert probe["http"].startswith("refused:")
    assert probe["ws"] == {"opened": False, "received": []}  # the handshake was refused
    assert secret not in page.content() and not any(secret in frame for frame in frames)
