"""Browser tools over CDP on a real headless Chromium, driving a page this test serves."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.instances import load_agent, resolve_session
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import user_message
from tests.http_pages import serve_page

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
PAGE = b"""<!doctype html><html><head><title>Shop</title></head><body>
<h1>Tea shop</h1><ul><li class="item">Green</li><li class="item">Black</li></ul>
<button id="buy" onclick="document.querySelector('h1').textContent = 'Thank you'">Buy</button>
</body></html>"""


@pytest.fixture(autouse=True)
def _sandbox_agents() -> None:
    import tests.sandbox_agents  # noqa: F401 - registers the agents


@pytest.fixture
def shop() -> Iterator[str]:
    with serve_page(PAGE) as base_url:
        yield base_url + "shop"


async def turn(model: Any, user: Any, *calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    model.script(Reply.tool_calls([ToolCallSpec(name, json.dumps(args), id=f"c{i}") for i, (name, args) in enumerate(calls)]), Reply.text("Done."))
    session = await sync_to_async(resolve_session)("browser-tools-agent", "web", user)
    agent = await sync_to_async(load_agent)(session)
    result = await agent.save_messages([user_message("Browse", f"u{len(model.requests)}")])
    assert result.message["parts"][-1]["text"] == "Done."
    return result.message


def output(message: dict[str, Any], index: int = 0) -> Any:
    part = next(p for p in message["parts"] if p.get("toolCallId") == f"c{index}")
    return part.get("output", part.get("errorText"))


async def test_browser_search_finds_commands_in_the_protocol_the_browser_serves(model, user):
    message = await turn(model, user, ("browser_search", {"query": "capture screenshot"}))
    matches = output(message)["matches"]
    assert matches[0]["name"] == "Page.captureScreenshot" and matches[0]["kind"] == "command"
    assert {"name": "format", "type": "string", "optional": True} .items() <= next(p for p in matches[0]["parameters"] if p["name"] == "format").items()


async def test_browser_execute_navigates_reads_the_dom_clicks_and_takes_a_screenshot(model, user, shop):
    code = f"""
        await page.goto({json.dumps(shop)});
        const items = await page.evaluate("[...document.querySelectorAll('.item')].map(li => li.textContent)");
        await page.evaluate("document.getElementById('buy').click()");
        const {{ root }} = await cdp.send("DOM.getDocument", {{}});
        const h1 = await cdp.send("DOM.querySelector", {{ nodeId: root.nodeId, selector: "h1" }});
        const html = await cdp.send("DOM.getOuterHTML", {{ nodeId: h1.nodeId }});
        const shot = await page.screenshot();
        console.log("title", await page.title());
        return {{ items, heading: html.outerHTML, shot }};
    """
    message = await turn(model, user, ("browser_execute", {"code": code}))
    result = output(message)
    assert result["logs"] == ["title Shop"]
    assert result["result"]["items"] == ["Green", "Black"]
    assert result["result"]["heading"] == "<h1>Thank you</h1>"
    assert result["result"]["shot"]["mediaType"] == "image/png" and result["result"]["shot"]["bytes"] > 1000
    [image] = [p for p in message["parts"] if p["type"] == "file"]
    assert image["mediaType"] == "image/png" and image["url"].startswith("data:image/png;base64,iVBORw0KGgo")


async def test_the_tab_stays_on_its_page_between_calls(model, user, shop):
    await turn(model, user, ("browser_execute", {"code": f"await page.goto({json.dumps(shop)}); return 1;"}))
    message = await turn(model, user, ("browser_execute", {"code": "return [location.href, await page.title()];".replace("location.href", "await page.evaluate('location.href')")}))
    assert output(message)["result"] == [shop, "Shop"]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("return await page.goto('file:///etc/passwd');", "Only http(s), data: and about:blank pages can be opened"),
        ("return await cdp.send('Page.navigate', { url: 'chrome://settings' });", "Only http(s), data: and about:blank pages can be opened"),
        ("return await cdp.send('Browser.close', {});", "Browser.close is not available to browser_execute"),
        ("return await cdp.send('Target.createTarget', { url: 'file:///etc/passwd' });", "Target.createTarget is not available"),
        ("return await cdp.send('DOM.setFileInputFiles', { files: ['/etc/passwd'], nodeId: 1 });", "DOM.setFileInputFiles is not available"),
        ("return await page.evaluate('fetch(\"file:///etc/passwd\").then(r => r.text())');", "Failed to fetch"),
    ],
)
async def test_escape_attempts_through_the_browser_are_refused(model, user, shop, code, error):
    message = await turn(model, user, ("browser_execute", {"code": f"await page.goto({json.dumps(shop)});\n{code}"}))
    assert error in output(message)
