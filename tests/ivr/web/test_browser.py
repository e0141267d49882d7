"""The pages in a real browser: Debian's headless Chromium driven by Playwright.

A call is placed the way Asterisk does it: through the real FastAGI flow
(the server identifies the caller and stores the context), then through the
AMI simulator's queue (QueueCallerJoin, AgentCalled, AgentConnect over the
real manager protocol).  Screenshots of both pages are kept in
``test-artifacts/screenshots`` (or $IVR_TEST_ARTIFACTS) for people to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from ivr.simulate import CallScript, place_call
from tests.ivr.web.conftest import PASSWORD

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


async def logged_in(browser: Browser, url: str, username: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(url + "/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")
    return page


async def screenshot(page: Page, name: str) -> None:
    (ARTIFACTS / "screenshots").mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "screenshots" / f"{name}.png"), full_page=True)


async def call_into_queue(web_server, number: str) -> tuple[str, dict]:
    """A call through the real FastAGI flow, then into the simulated queue; (uniqueid, AGI variables)."""
    result = await place_call("127.0.0.1", web_server.agi_port, CallScript(number=number, line="general"))
    assert result.error is None and result.variables.get("IVR_CALL_ID")
    variables = {k: result.variables[k] for k in ("IVR_CALL_ID", "IVR_CUSTOMER_ID", "IVR_SEGMENT")
                 if k in result.variables}
    web_server.sim.place_caller("support", uniqueid=result.uniqueid, callerid=f'"" <{number[1:]}>',
                                variables=variables)
    return result.uniqueid, result.variables


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
    await page.context.close()


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
    await expect(support.locator('tr[data-interface="PJSIP/1002"] td.state')).to_have_text("in_call")
    await screenshot(page, "wallboard-answered")

    # a supervisor action from the page reaches Asterisk
    page.once("dialog", lambda dialog: dialog.accept("training"))
    await support.locator('tr[data-interface="PJSIP/1003"] button', has_text="Pause").click()
    await expect(page.locator("#action-result")).to_contain_text("QueuePause")
    assert web_server.sim.queue("support").members["PJSIP/1003"].paused
    await page.context.close()


async def test_agent_cannot_open_the_wallboard_or_another_agents_call(browser, web_server):
    from tests.ivr.web.test_web import insert_call

    await insert_call(web_server, "dmitrys-call", web_server.agents["PJSIP/1002"])
    page = await logged_in(browser, web_server.url, "anna")
    response = await page.goto(web_server.url + "/wallboard")
    assert response.status == 403
    response = await page.goto(web_server.url + "/api/v1/calls/dmitrys-call")
    assert response.status == 403
    await page.context.close()
