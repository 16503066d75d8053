"""The web playground in a real headless Chromium: create a knowledge base, upload a document and
watch its progress, ask a question, see the answer stream in with its sources; with API keys on, the
page asks for a key and then works. The page and its assets are static files the server ships."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from conftest import ROOT, TUTORIAL_DOCS, Server, new_id, start_server

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling Google services on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "test-artifacts" / "playground.png"
KEY = "pg-" + "9f8e7d6c" * 4
ASSETS = {"/": "text/html", "/playground/app.js": "text/javascript", "/playground/api.js": "text/javascript",
          "/playground/style.css": "text/css"}
# Rendered as text, this does nothing; parsed as HTML, it would set window.__xss.
HOSTILE = '<img src=x onerror="window.__xss=1"><b>bold</b>'


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make dev` installs Debian's chromium (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="playground-chromium-")
    with sync_playwright() as playwright:
        # A persistent context is how Playwright takes a user-data-dir: a fresh profile for this run.
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860})
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("playground-auth"), None, env={"STACKRAG_API_KEY": KEY})
    yield server
    server.stop()


def page_errors(page: Page) -> list[str]:
    """Script errors and CSP violations the page reports, collected as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "status of 401" not in msg.text else None)
    return errors


def test_page_and_assets_are_served_without_a_key_and_stay_out_of_the_schema(secured):
    for path, media_type in ASSETS.items():
        response = httpx.get(secured.url + path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].split(";")[0] == media_type, path
        assert "script-src" not in response.headers["content-security-policy"]  # default-src 'self' covers it
        assert response.headers["x-content-type-options"] == "nosniff"
    html = httpx.get(secured.url + "/").text
    assert '<script type="module" src="/playground/app.js">' in html
    css = httpx.get(secured.url + "/playground/style.css").text
    # Nothing from a CDN: every script, style and font comes from this server, so it works offline.
    assert not re.search(r'(src|href)="(https?:)?//', html) and "url(" not in css and "@import" not in css
    for path in ("/playground/nope.js", "/playground/..%2Fauth.py", "/playground/index.html/x"):
        assert httpx.get(secured.url + path).status_code in (401, 404), path
    assert httpx.get(secured.url + "/v1/vector-dbs").status_code == 401
    schema = httpx.get(secured.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert "/" not in schema["paths"] and not any(p.startswith("/playground") for p in schema["paths"])


def test_upload_ask_and_see_the_streamed_answer_with_its_sources(agent_stack, browser):
    page = browser.new_page()
    errors = page_errors(page)
    page.goto(agent_stack.url + "/")
    expect(page.locator("#model option").first).to_have_attribute("value", re.compile(".+"))

    db = new_id("playground")
    if page.locator("#new-db-box").get_attribute("open") is None:
        page.click("#new-db-box summary")
    page.fill("#new-db-id", db)
    page.click("#new-db button[type=submit]")
    expect(page.locator("#vector-db")).to_have_value(db)

    # Every change to the document list is recorded, to see each status the page showed on the way.
    page.evaluate("""() => {
        window.__states = [];
        new MutationObserver(() => {
            for (const row of document.querySelectorAll('#ingest-list li')) {
                window.__states.push(`${row.dataset.doc}|${row.className}|${row.querySelector('.status').textContent}`);
            }
        }).observe(document.getElementById('ingest-list'), {subtree: true, childList: true, characterData: true,
                                                             attributes: true});
    }""")
    # A file upload and a pasted text, ingested one after the other with a status each.
    page.set_input_files("#file-input", str(TUTORIAL_DOCS / "chat.rst"))
    page.click("[data-tab=text]")
    page.fill("#text-title", HOSTILE)
    page.fill("#text-input", f"Untrusted text: {HOSTILE}")
    page.click("#text-form button[type=submit]")
    expect(page.locator("#ingest")).to_have_attribute("data-state", "done", timeout=240_000)
    uploaded = page.locator('#ingest-list li[data-doc="chat.rst"]')
    expect(uploaded).to_have_class(re.compile(r"\bdone\b"))
    expect(uploaded.locator(".status")).to_have_text(re.compile(r"^\d+ chunks? · "))
    expect(page.locator("#ingest .bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#ingest-summary")).to_contain_text("2 of 2 documents added")
    expect(page.locator("#ingest-list .name").nth(1)).to_have_text(HOSTILE)  # shown as text, not parsed
    seen = list(dict.fromkeys(page.evaluate("window.__states")))
    chat_states = [state.split("|", 2)[1:] for state in seen if state.startswith("chat.rst|")]
    assert ["doc working", "chunking and embedding…"] in chat_states, chat_states
    assert chat_states[-1][0] == "doc done", chat_states

    # Every change to the answer is recorded, to see it grow token by token rather than arrive at once.
    page.evaluate("""() => {
        window.__lengths = [];
        new MutationObserver(() => {
            const answer = document.querySelector('.msg.bot .answer-text');
            if (answer) window.__lengths.push(answer.textContent.length);
        }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
    }""")
    page.fill("#question", "How do I fine-tune Llama3 on chat data, and which chat format does it use?")
    page.press("#question", "Enter")
    answer = page.locator(".msg.bot").last
    expect(answer).to_have_attribute("data-state", "done", timeout=300_000)
    text = answer.locator(".answer-text").text_content() or ""
    lengths = page.evaluate("window.__lengths")
    assert len(text.strip()) > 20, text
    assert len({n for n in lengths if 0 < n}) >= 3, lengths  # it grew in steps: streamed
    # Checked sentence by sentence: each wrapped, supported ones numbered (by CSS: the text stays the answer).
    checked = answer.locator(".answer-text .supported, .answer-text mark.unsupported")
    assert checked.count() >= 1
    assert all(answer.locator(".answer-text .supported").evaluate_all(
        "nodes => nodes.map(n => /^\\d+(,\\d+)*$/.test(n.dataset.cite))"))
    expect(answer.locator(".check-note")).to_have_text(re.compile(r"^\d+ of \d+ sentences supported"))

    sources = answer.locator(".source")
    assert sources.count() >= 1
    cited = sources.locator(".doc-id").all_text_contents()
    assert "chat.rst" in cited, cited
    first = sources.nth(cited.index("chat.rst"))
    expect(first.locator(".score")).to_have_text(re.compile(r"^similarity 0\.\d{2}$"))
    first.locator("summary").click()
    expect(first.locator(".chunk")).to_be_visible()
    assert len(first.locator(".chunk").text_content() or "") > 50

    assert page.evaluate("window.__xss") is None and page.locator("img").count() == 0
    assert errors == []
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(SCREENSHOT.with_name("playground-dark.png")), full_page=True)
    print(f"screenshots: {SCREENSHOT} and playground-dark.png beside it")
    page.click("#new-chat")
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    page.close()
    # The page deletes its agent when it goes away, so visits leave no agents behind.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and db in str(httpx.get(f"{agent_stack.url}/v1/agents").json()):
        time.sleep(0.2)
    assert db not in str(httpx.get(f"{agent_stack.url}/v1/agents").json())


def test_with_keys_on_the_page_asks_for_a_key_then_loads_the_knowledge_bases(secured, browser):
    db = new_id("secured")
    registered = httpx.post(f"{secured.url}/v1/vector-dbs", headers={"Authorization": f"Bearer {KEY}"},
                            json={"vector_db_id": db, "embedding_model": "all-MiniLM-L6-v2", "embedding_dimension": 384})
    assert registered.status_code == 200, registered.text
    page = browser.new_page()
    errors = page_errors(page)
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    page.goto(secured.url + "/")

    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("needs an API key")
    page.fill("#key-input", "not-the-key")
    page.press("#key-input", "Enter")
    expect(page.locator("#key-reason")).to_contain_text("refused")  # asked again, saying why
    page.fill("#key-input", KEY)
    page.press("#key-input", "Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator(f'#vector-db option[value="{db}"]')).to_have_count(1)
    expect(page.locator("#forget-key")).to_be_visible()

    assert page.evaluate("sessionStorage.getItem('stackrag.apiKey')") == KEY
    assert all(KEY not in url for url, _ in sent) and KEY not in page.url
    assert any(url.endswith("/v1/vector-dbs") and auth == f"Bearer {KEY}" for url, auth in sent)
    assert errors == []
    page.close()
