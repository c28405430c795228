"""The search page in a real browser: Debian's Chromium driven by Playwright (its own browser
download is never used), against the HTTP app served by uvicorn over a Library with fake
picture and text models and the tiny CLAP. The page's screenshots in docs/ come from here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, ffmpeg, free_port, index_direct, make_pdf, make_settings, speak, write_image

pytestmark = pytest.mark.slow  # a browser and a server: about a minute

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
XSS_NAME = "<img src=x onerror=alert(1)>.txt"
SHOTS = ROOT / "docs" / "screenshots"
FIGURES = {}


def webm(path: Path, scenes: list[str], seconds: float = 2.0) -> Path:
    """A VP9/Opus WebM (what Chromium plays) of lavfi scenes with a tone."""
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y"]
    for source in scenes:
        cmd += ["-f", "lavfi", "-i", f"{source}{':' if '=' in source else '='}size=320x240:rate=25:duration={seconds}"]
    cmd += ["-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds * len(scenes)}"]
    graph = "".join(f"[{i}:v]setsar=1,format=yuv420p[v{i}];" for i in range(len(scenes)))
    graph += "".join(f"[v{i}]" for i in range(len(scenes))) + f"concat=n={len(scenes)}:v=1[out]"
    cmd += ["-filter_complex", graph, "-map", "[out]", "-map", f"{len(scenes)}:a", "-c:v", "libvpx-vp9",
            "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k", "-c:a", "libopus", "-b:a", "64k", str(path)]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_clap):
    import uvicorn

    from msearch.embed import build_embedder
    from msearch.embed.fake import FakeEmbedder
    from msearch.library import Library
    from msearch.search import SearchService
    from serve.api import Backend, create_app

    root = tmp_path_factory.mktemp("web") / "media"
    (root / "notes" / "2024").mkdir(parents=True)
    (root / "notes" / "budget.md").write_text("The quarterly budget review: travel costs cut, marketing up.")
    (root / "notes" / "2024" / "harbour.txt").write_text("Harbour inspection: the pier needs new timber before winter.")
    (root / "notes" / "2024" / "garden.txt").write_text("Tomatoes need full sun and regular watering in summer.")
    (root / "notes" / XSS_NAME).write_text("a probe: harbour lighthouse keeper notes")
    for i in range(3):
        write_image(root / "photos" / f"photo{i}.jpg", seed=i, size=(320, 240))
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    webm(root / "video" / "three-scenes.webm", ["color=c=red", "color=c=blue", "testsrc"])
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25:duration=4", "-f", "lavfi", "-i", "sine=frequency=500:duration=4",
                    "-c:v", "mpeg4", "-q:v", "5", "-c:a", "mp3", str(root / "video" / "old-camera.avi")],
                   check=True, capture_output=True, timeout=120)
    speak(root / "audio" / "interview.wav", "the interviewee talks about the harbour budget", lead_s=1.0)
    make_pdf(root / "docs" / "report.pdf", ["Harbour report\nThe pier timber is rotten.",
                                            "Appendix\nLighthouse lamp schedule."])
    settings = make_settings(tmp_path_factory.mktemp("web-data"),
                             models={"clip": "fake", "text": "fake", "clap": tiny_clap})
    embedders = {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text"), "clap": build_embedder("clap", settings)}
    lib = Library(settings)
    report = index_direct(lib, settings, [root], embedders)
    assert [f["path"] for f in report["failed"]] == [str(root / "photos" / "broken.jpg")], report["failed"]
    service = SearchService(embedders, lib, settings)

    class Queue:
        submitted: list = []

        def submit(self, paths):
            self.submitted.append(paths)

        def state(self):
            return {}

    queue = Queue()
    backend = Backend(settings=settings, service=lambda: service, store=lib, queue=lambda: queue,
                      token=lambda: "web-token", missing=lambda: {"whisper": "the whisper model is switched off "
                                                                     "(MSEARCH_MODELS__WHISPER=none)."})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(backend), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", root, queue
    server.should_exit = True
    thread.join(timeout=10)
    lib.close()
    for e in embedders.values():
        e.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed (apt-get install chromium; scripts/system-deps.sh does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


@pytest.fixture
def page(browser, site):
    # The tests' own waiting code is evaluated in the page, which the page's CSP forbids; the
    # screenshot test runs with the CSP on and checks that the page itself never violates it.
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-US", bypass_csp=True)
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    assert not page.errors, page.errors
    context.close()


def cards(page) -> list[dict]:
    page.wait_for_selector("#results > .card", timeout=15000)
    return page.eval_on_selector_all("#results > .card", """els => els.map(e => ({
        name: e.querySelector('.name').textContent, kind: e.className.replace('card kind-', ''),
        start: e.dataset.start, file: e.dataset.file}))""")


def clock_s(text: str) -> float:
    h, m, s = (int(x) for x in text.strip().split(":"))
    return h * 3600 + m * 60 + s


def api_search(site, body) -> list[dict]:
    import httpx

    return httpx.post(f"{site[0]}/api/v1/search", json=body, timeout=30).json()["results"]


def test_a_text_query_shows_the_cards_in_order_and_the_address_bar_keeps_it(page, site):
    url, root, _ = site
    page.goto(f"{url}/?kind=text")
    start = time.perf_counter()
    page.fill("#q", "harbour pier timber")
    page.press("#q", "Enter")
    shown = cards(page)
    FIGURES["first_results_s"] = round(time.perf_counter() - start, 2)
    want = [Path(r["path"]).name for r in api_search(site, {"query": "harbour pier timber", "top_k": 20,
                                                            "kinds": ["text"]})]
    assert [c["name"] for c in shown] == want and "harbour.txt" in want[:2]
    assert "q=harbour+pier+timber" in page.url and "kind=text" in page.url
    assert page.locator("#results mark").first.text_content().lower() in ("harbour", "pier", "timber")
    page.reload()
    assert page.input_value("#q") == "harbour pier timber"
    assert [c["name"] for c in cards(page)] == want
    page.go_back()  # the empty page before the search
    page.wait_for_function("document.querySelectorAll('#results > .card').length === 0")


def test_kind_and_folder_filters_change_the_results(page, site):
    url, root, _ = site
    page.goto(f"{url}/?q=harbour")
    assert {c["kind"] for c in cards(page)} > {"text"}
    page.click("#kinds button[data-kind=page]")
    page.wait_for_function("[...document.querySelectorAll('#results > .card')].every(c => c.classList.contains('kind-page'))")
    assert "kind=page" in page.url and {c["kind"] for c in cards(page)} == {"page"}
    page.click("#kinds button[data-kind=page]")
    page.fill("#path", str(root / "notes" / "2024"))
    page.press("#path", "Enter")
    page.dispatch_event("#path", "change")
    page.wait_for_function("""() => { const names = [...document.querySelectorAll('#results > .card .name')];
        return names.length && names.every(n => ['harbour.txt', 'garden.txt'].includes(n.textContent)); }""")
    assert "path=" in page.url
    assert {c["name"] for c in cards(page)} <= {"harbour.txt", "garden.txt"}


def test_a_picture_dropped_on_the_page_is_the_query(page, site):
    url, root, _ = site
    page.goto(f"{url}/")
    data = list((root / "photos" / "photo1.jpg").read_bytes())
    page.evaluate("""bytes => {
        const file = new File([new Uint8Array(bytes)], 'dropped.jpg', {type: 'image/jpeg'});
        const dt = new DataTransfer(); dt.items.add(file);
        for (const type of ['dragenter', 'dragover', 'drop'])
            document.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", data)
    shown = cards(page)
    assert shown[0]["name"] == "photo1.jpg"
    assert page.is_visible("#example img")


def test_a_sound_file_is_the_query(page, site):
    url, root, _ = site
    page.goto(f"{url}/")
    page.set_input_files("#file", str(root / "audio" / "interview.wav"))
    shown = cards(page)
    assert shown[0]["name"] == "interview.wav" and shown[0]["kind"] == "audio"


def test_a_video_card_plays_from_its_moment_through_ranges(page, site):
    url, root, _ = site
    statuses = []
    page.on("response", lambda r: statuses.append(r.status) if "/content" in r.url else None)
    page.goto(f"{url}/?q=scene&kind=video")
    card = page.locator("#results > .card", has_text="three-scenes.webm")
    start = float(card.get_attribute("data-start"))
    card.locator("button.play").click()
    page.wait_for_function("""() => { const v = document.querySelector('.card.open video');
        return v && v.readyState >= 2 && !v.paused; }""", timeout=20000)
    at = page.evaluate("document.querySelector('.card.open video').currentTime")
    assert abs(at - start) <= 0.3 + 0.5, (at, start)  # started at the moment (a frame or two of play allowed)
    assert 206 in statuses
    # The other matching moments are marks on the timeline; a mark plays its moment.
    marks = card.locator(".timeline .mark")
    assert marks.count() >= 2
    starts = [clock_s(marks.nth(i).get_attribute("aria-label").split("–")[0]) for i in range(marks.count())]
    latest = max(range(len(starts)), key=starts.__getitem__)
    assert starts[latest] >= 2.0
    marks.nth(latest).click()
    page.wait_for_function(f"document.querySelector('.card.open video').currentTime >= {starts[latest] - 0.3}",
                           timeout=10000)
    # One player at a time: playing another card closes this one.
    page.locator("#results > .card", has_text="old-camera.avi").locator("button.play").click()
    page.wait_for_function("document.querySelectorAll('.card.open').length === 1 && "
                           "document.querySelector('.card.open').textContent.includes('old-camera.avi')")
    assert page.evaluate("[...document.querySelectorAll('video')].filter(v => !v.paused).length") <= 1


def test_a_source_the_browser_cannot_play_comes_as_a_clip(page, site):
    url, _, _ = site
    clips = []
    page.on("response", lambda r: clips.append((r.status, r.headers.get("content-type"))) if "/clip?" in r.url else None)
    page.goto(f"{url}/?q=camera&kind=video")
    card = page.locator("#results > .card", has_text="old-camera.avi")
    card.locator("button.play").click()
    page.wait_for_function("""() => { const v = document.querySelector('.card.open video');
        return v && v.src.includes('/clip?') && v.readyState >= 1; }""", timeout=60000)
    assert clips and clips[0][1] == "video/webm"


def test_a_page_card_shows_its_page(page, site):
    url, _, _ = site
    page.goto(f"{url}/?q=lighthouse+lamp&kind=page")
    card = page.locator("#results > .card").first
    assert "report.pdf" in card.locator(".name").text_content()
    page.wait_for_function("""() => { const i = document.querySelector('#results > .card .thumb img');
        return i && i.complete && i.naturalWidth > 0 && i.src.includes('/pages/'); }""")
    href = card.locator("a.open").get_attribute("href")
    assert "/content#page=" in href


def test_the_status_page_lists_failures_models_and_takes_control_actions(page, site):
    url, root, queue = site
    page.goto(f"{url}/?view=status")
    page.wait_for_selector(".status table")
    text = page.text_content("#status")
    assert str(root / "photos" / "broken.jpg") in text and "cannot decode image" in text
    assert "MSEARCH_MODELS__WHISPER=none" in text and "clip" in text
    page.fill("#token", "web-token")
    page.click(".control button >> text=Save")
    page.fill("#index-path", str(root / "notes"))
    page.click("#index-button")
    # The index request's outcome replaces the "Done" the token's Save left.
    page.wait_for_function("!['', 'Done'].includes(document.querySelector('.control .message').textContent)")
    assert page.evaluate("localStorage.getItem('msearch.token')") == "web-token"
    # No roots are configured in this app: the server refuses, and the page says why.
    assert "MSEARCH_ROOTS" in page.text_content(".control .message") and queue.submitted == []


def test_the_interface_speaks_chinese_and_english(page, site):
    url, _, _ = site
    page.goto(f"{url}/?q=harbour")
    cards(page)
    assert page.get_attribute("#q", "placeholder").startswith("Search")
    page.click("#lang")
    assert "搜索" in page.get_attribute("#q", "placeholder") and page.text_content("#kinds") .startswith("视频")
    page.wait_for_function("document.querySelector('#summary').textContent.includes('条')")
    page.reload()
    cards(page)
    assert "搜索" in page.get_attribute("#q", "placeholder")  # the choice is kept
    page.click("#lang")
    assert page.get_attribute("#q", "placeholder").startswith("Search")


def test_the_keyboard_moves_opens_plays_and_closes(page, site):
    url, _, _ = site
    page.goto(f"{url}/?q=harbour")
    cards(page)
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.index") == "0"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    # Enter opens the video card, Space plays it, Esc closes it where the page was.
    index = page.evaluate("[...document.querySelectorAll('#results > .card')].findIndex(c => c.classList.contains('kind-video'))")
    assert index >= 0
    page.evaluate(f"document.querySelectorAll('#results > .card')[{index}].focus()")
    page.keyboard.press("Enter")
    page.wait_for_selector(".card.open video")
    page.keyboard.press(" ")
    page.wait_for_function("!document.querySelector('.card.open video').paused", timeout=20000)
    y = page.evaluate("window.scrollY")
    page.keyboard.press("Escape")
    assert page.evaluate("document.querySelectorAll('.card.open').length") == 0
    assert abs(page.evaluate("window.scrollY") - y) < 2


def test_names_and_snippets_are_text_never_html(page, site):
    url, _, _ = site
    page.goto(f"{url}/?q=lighthouse+keeper+probe&kind=text")
    card = page.locator("#results > .card", has_text="onerror")
    assert card.locator(".name").text_content() == XSS_NAME
    assert page.evaluate("document.querySelectorAll('#results img[src=\"x\"]').length") == 0
    time.sleep(0.5)
    assert page.dialogs == []


def test_the_page_loads_nothing_from_elsewhere_and_screenshots(browser, site):
    url, _, _ = site
    SHOTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        for locale, lang in (("en-US", "en"), ("zh-CN", "zh")):
            context = browser.new_context(viewport={"width": 1200, "height": 860}, locale=locale, color_scheme=scheme)
            page = context.new_page()
            hosts, violations = set(), []
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.on("pageerror", lambda e: violations.append(str(e)))
            page.goto(f"{url}/?q=harbour+budget")
            cards(page)
            page.wait_for_load_state("networkidle")
            if scheme == "light" and lang == "en":
                FIGURES["first_load_kb"] = round(page.evaluate(
                    "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
                    ".filter(e => !e.name.includes('/api/')).reduce((n, e) => n + (e.transferSize || e.encodedBodySize || 0), 0)") / 1024, 1)
            assert hosts == {url.split("/")[2]}, hosts
            assert not violations, violations
            page.screenshot(path=str(SHOTS / f"search-{scheme}-{lang}.png"))
            if lang == "en":
                page.goto(f"{url}/?view=status")
                page.wait_for_selector(".status table")
                page.screenshot(path=str(SHOTS / f"status-{scheme}.png"), full_page=True)
            context.close()
    (SHOTS / "figures.json").write_text(json.dumps(FIGURES, indent=1))
