"""The pages in a real browser: Debian's headless Chromium driven by Playwright.

A call is placed the way Asterisk does it: through the real FastAGI flow
(the server identifies the caller and stores the context), then through the
AMI simulator's queue (QueueCallerJoin, AgentCalled, AgentConnect over the
real manager protocol).  Screenshots of both pages are kept in
``test-artifacts/screenshots`` (or $IVR_TEST_ARTIFACTS) for people to look at.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.ivr.web.conftest import PASSWORD, call_into_queue

ARTIFACTS = Path(os.environ.get("IVR_TEST_ARTIFACTS", Path(__file__).resolve().parents[3] / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOWCASE_CARD_READY = "+79000000003"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"])
        yield browser
        await browser.close()


_PROBLEMS: dict[int, list[str]] = {}  # id(page) -> script errors and blocked content seen on it


async def logged_in(browser: Browser, url: str, username: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    problems = _PROBLEMS[id(page)] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" and "Content Security Policy" in message.text else None)
    await page.goto(url + "/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")
    return page


async def done(page: Page) -> None:
    """Close the page's browser context; the page must have run without script errors or blocked content."""
    await page.context.close()
    problems = _PROBLEMS.pop(id(page), [])
    assert not problems, problems


async def screenshot(page: Page, name: str) -> None:
    (ARTIFACTS / "screenshots").mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "screenshots" / f"{name}.png"), full_page=True)


async def test_agent_sees_the_card_of_the_caller_who_rings_them(browser, web_server):
    page = await logged_in(browser, web_server.url, "anna")
    assert page.url.endswith("/agent")
    await expect(page.locator("#link")).to_have_text("live")
    uniqueid, variables = await call_into_queue(web_server, SHOWCASE_CARD_READY)
    context = await web_server.services.contexts.get(variables["IVR_CALL_ID"])
    customer = context["decision"]["customer"]["name"]

    web_server.sim.ring_agent(uniqueid, "PJSIP/1001")
    card = page.locator(f'article.card[data-call-id="{variables["IVR_CALL_ID"]}"]')
    await expect(card).to_have_attribute("data-state", "ringing")
    await expect(card.locator("h2")).to_contain_text(customer)
    web_server.sim.agent_answers(uniqueid, "PJSIP/1001")
    await expect(card).to_have_attribute("data-state", "answered")
    await expect(card).to_contain_text("Probably calls about")
    await expect(card).to_contain_text("Open cases")
    await screenshot(page, "agent-card")

    # one click records the real reason and the outcome
    await card.locator("select[name=outcome]").select_option("resolved")
    await card.locator("form.disposition button[type=submit]").click()
    await expect(card.locator("form.disposition")).to_contain_text("saved")
    await done(page)


async def test_supervisor_wallboard_shows_the_caller_waiting_then_answered(browser, web_server):
    page = await logged_in(browser, web_server.url, "sup")
    assert page.url.endswith("/wallboard")
    support = page.locator('article.queue[data-queue="support"]')
    await expect(support.locator(".waiting")).to_have_text("0 waiting")
    uniqueid, _ = await call_into_queue(web_server, SHOWCASE_CARD_READY)
    await expect(support.locator(".waiting")).to_have_text("1 waiting")
    await expect(support.locator("ol.callers li")).to_have_count(1)
    await screenshot(page, "wallboard-waiting")
    web_server.sim.ring_agent(uniqueid, "PJSIP/1002")
    web_server.sim.agent_answers(uniqueid, "PJSIP/1002")
    await expect(support.locator(".waiting")).to_have_text("0 waiting")
    agent = support.locator('tr[data-interface="PJSIP/1002"]')
    await expect(agent).to_have_attribute("data-state", "in_call")
    await expect(agent.locator("td.state .chip")).to_have_text("in call")
    await screenshot(page, "wallboard-answered")

    # a supervisor action from the page reaches Asterisk
    page.once("dialog", lambda dialog: dialog.accept("training"))
    await support.locator('tr[data-interface="PJSIP/1003"] button', has_text="Pause").click()
    await expect(page.locator("#action-result")).to_contain_text("QueuePause")
    assert web_server.sim.queue("support").members["PJSIP/1003"].paused
    await done(page)


async def test_agent_cannot_open_the_wallboard_or_another_agents_call(browser, web_server):
    from tests.ivr.web.test_web import insert_call

    await insert_call(web_server, "dmitrys-call", web_server.agents["PJSIP/1002"])
    page = await logged_in(browser, web_server.url, "anna")
    response = await page.goto(web_server.url + "/wallboard")
    assert response.status == 403
    response = await page.goto(web_server.url + "/api/v1/calls/dmitrys-call")
    assert response.status == 404
    await done(page)


async def test_wallboard_paints_breached_service_levels_long_waits_and_abandons(browser, web_server):
    """Asterisk's clock is set back so callers have waited long already (events carry their Timestamp)."""
    import time

    sim = web_server.sim
    page = await logged_in(browser, web_server.url, "sup")
    support = page.locator('article.queue[data-queue="support"]')
    await expect(page.locator("#link")).to_have_text("live")
    sim.clock = lambda: time.time() - 95
    answered, _ = await call_into_queue(web_server, SHOWCASE_CARD_READY)
    sim.clock = lambda: time.time() - 40
    waiting, _ = await call_into_queue(web_server, "+79000000001")
    sim.clock = lambda: time.time() - 50
    gone = sim.place_caller("support", callerid='"" <79000000002>').channel.uniqueid
    sim.clock = time.time
    sim.caller_hangs_up(gone)
    sim.ring_agent(answered, "PJSIP/1002")
    sim.agent_answers(answered, "PJSIP/1002")

    await expect(support).to_have_class("queue sl-breached")  # answered after 95 s, abandoned after 50 s
    await expect(support.locator(".figure.sl-breached b")).to_have_text("0%")
    await expect(page.locator("#abandoned tbody tr")).to_have_count(1)
    caller = support.locator("ol.callers li")
    await expect(caller).to_have_count(1)
    await expect(caller.locator(".bar")).to_have_class("bar long")  # past the 20 s threshold
    width = await caller.locator(".bar span").evaluate("node => node.getBoundingClientRect().width")
    assert width > 10, "the wait bar has no width (blocked style?)"
    first = await caller.locator(".wait").text_content()
    await expect(caller.locator(".wait")).not_to_have_text(first)  # the wait counts up between snapshots
    await expect(support.locator('tr[data-interface="PJSIP/1002"]')).to_have_attribute("data-state", "in_call")
    await screenshot(page, "wallboard-busy")
    await done(page)


async def test_the_card_keeps_what_the_agent_chose_while_the_call_goes_on(browser, web_server):
    page = await logged_in(browser, web_server.url, "anna")
    await expect(page.locator("#link")).to_have_text("live")
    uniqueid, variables = await call_into_queue(web_server, SHOWCASE_CARD_READY)
    web_server.sim.ring_agent(uniqueid, "PJSIP/1001")
    card = page.locator(f'article.card[data-call-id="{variables["IVR_CALL_ID"]}"]')
    await expect(card).to_have_attribute("data-state", "ringing")
    await expect(page).to_have_title(re.compile("Ringing"))
    await card.locator("select[name=outcome]").select_option("callback")
    await card.locator("input[name=note]").fill("перезвонить после 15:00")
    web_server.sim.agent_answers(uniqueid, "PJSIP/1001")
    await expect(card).to_have_attribute("data-state", "answered")
    assert await card.locator("select[name=outcome]").input_value() == "callback"
    assert await card.locator("input[name=note]").input_value() == "перезвонить после 15:00"
    await expect(page).not_to_have_title(re.compile("Ringing"))

    web_server.sim.complete_call(uniqueid)
    await expect(card).to_have_attribute("data-state", "ended")
    await expect(card.locator("button.close")).to_be_visible()
    await card.locator("form.disposition button[type=submit]").click()
    await expect(card.locator("form.disposition .status")).to_have_text("saved")
    await expect(card).to_have_count(0, timeout=10_000)  # recorded and over: it goes by itself
    row = page.locator("#recent tbody tr").first
    await expect(row).to_contain_text("callback")
    await done(page)


async def test_pages_reconnect_by_themselves_and_follow_the_log_out(browser, web_server):
    from ivr.web.keys import SOCKETS

    page = await logged_in(browser, web_server.url, "anna")
    link = page.locator("#link")
    await expect(link).to_have_text("live")
    await web_server.runner.app[SOCKETS].close_all()  # as if a proxy in between dropped them
    await expect(link).not_to_have_text("live")
    await expect(link).to_have_text("live", timeout=10_000)
    uniqueid, variables = await call_into_queue(web_server, SHOWCASE_CARD_READY)
    web_server.sim.ring_agent(uniqueid, "PJSIP/1001")
    await expect(page.locator(f'article.card[data-call-id="{variables["IVR_CALL_ID"]}"]')).to_have_count(1)

    other_tab = await page.context.new_page()  # the same log-in, logged out from another tab
    await other_tab.goto(web_server.url + "/agent")
    await other_tab.click("header form button")
    await expect(other_tab).to_have_url(re.compile("/login"))
    await expect(page).to_have_url(re.compile("/login"), timeout=10_000)
    await done(page)


async def test_wait_bars_are_as_long_as_the_waits_under_the_page_s_own_policy(browser, web_server):
    """Widths come from script (CSSOM), which the Content-Security-Policy allows; a style attribute would not."""
    import time

    sim = web_server.sim
    page = await logged_in(browser, web_server.url, "sup")
    await expect(page.locator("#link")).to_have_text("live")
    for waited in (10, 30):  # the scale is twice the 20 s threshold: 25 % and 75 %
        sim.clock = lambda waited=waited: time.time() - waited
        sim.place_caller("support", callerid=f'"" <7900000{waited:04d}>')
    sim.clock = time.time
    callers = page.locator('article.queue[data-queue="support"] ol.callers li')
    await expect(callers).to_have_count(2)
    await page.wait_for_timeout(2000)  # past the bars' transition
    measured = await page.evaluate("""() => [...document.querySelectorAll(
        'article.queue[data-queue="support"] ol.callers li')].map((li) => {
          const bar = li.querySelector(".bar"), fill = li.querySelector(".bar span");
          return {fraction: fill.getBoundingClientRect().width / bar.getBoundingClientRect().width,
                  waited: IVR.now() - Number(fill.dataset.waitSince), styled: fill.hasAttribute("style")};
        })""")
    scale = max(40, *(m["waited"] for m in measured))
    for bar in measured:
        assert bar["fraction"] == pytest.approx(min(1.0, bar["waited"] / scale), abs=0.06), measured
    assert {round(m["fraction"], 1) for m in measured} != {1.0}  # not every bar full
    await done(page)


async def test_the_card_says_when_the_caller_s_role_was_assumed(browser, web_server):
    from ivr.hub import agent_topic

    page = await logged_in(browser, web_server.url, "anna")
    await expect(page.locator("#link")).to_have_text("live")
    anna = web_server.agents["PJSIP/1001"]
    for call_id, question in (
        ("assumed-role", {"asked": ["private client", "director"], "confirmed": False,
                          "assumed": "director of ООО Ромашка"}),
        ("chosen-role", {"asked": ["private client", "director"], "chosen": "private client"}),
    ):
        await web_server.agent_side.hub.publish(agent_topic(anna), {
            "type": "screenpop", "call_id": call_id, "seq": 1, "state": "ringing", "at": 1.0, "queue": "support",
            "card": {"context": "found", "number": "+*******0003", "ivr": {"role_question": question}}})
    await expect(page.locator('article.card[data-call-id="assumed-role"] .ivr')).to_contain_text(
        "role not confirmed — routed as director of ООО Ромашка")
    await expect(page.locator('article.card[data-call-id="chosen-role"] .ivr')).to_contain_text(
        "(private client / director): private client")
    await done(page)
