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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.ivr.web.conftest import PASSWORD, call_into_queue
from tests.waiting import eventually

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


async def logged_in(browser: Browser, url: str, username: str, *, width: int = 1280, height: int = 900,
                    locale: str = "en-GB") -> Page:
    """A fresh browser context (its own cookies), logged in; `locale` sets its Accept-Language."""
    context = await browser.new_context(viewport={"width": width, "height": height}, locale=locale)
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


async def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    (ARTIFACTS / "screenshots").mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "screenshots" / f"{name}.png"), full_page=full_page)


async def is_live(page: Page) -> None:
    await expect(page.locator("#link")).to_have_attribute("data-up", "1")


async def test_agent_sees_the_card_of_the_caller_who_rings_them(browser, web_server):
    page = await logged_in(browser, web_server.url, "anna")
    assert page.url.endswith("/agent")
    await is_live(page)
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
    await expect(card.locator("form.disposition .status")).to_contain_text("Saved at")
    await expect(page.locator("#saved-note")).to_contain_text("Call recorded at")
    await expect(card.locator(".badge.saved")).to_be_visible()
    await done(page)


async def test_supervisor_wallboard_shows_the_caller_waiting_then_answered(browser, web_server):
    page = await logged_in(browser, web_server.url, "sup")
    assert page.url.endswith("/wallboard")
    support = page.locator('article.queue[data-queue="support"]')
    await expect(support.locator(".waiting")).to_have_text("Waiting: 0")
    uniqueid, _ = await call_into_queue(web_server, SHOWCASE_CARD_READY)
    await expect(support.locator(".waiting")).to_have_text("Waiting: 1")
    await expect(support.locator("ol.callers li")).to_have_count(1)
    await screenshot(page, "wallboard-waiting")
    web_server.sim.ring_agent(uniqueid, "PJSIP/1002")
    web_server.sim.agent_answers(uniqueid, "PJSIP/1002")
    await expect(support.locator(".waiting")).to_have_text("Waiting: 0")
    agent = page.locator('#agents [data-interface="PJSIP/1002"]')
    await expect(agent).to_have_attribute("data-state", "in_call")
    await expect(agent.locator(".word")).to_have_text("On a call")
    await expect(page.locator("#calls tbody tr")).to_have_count(1)  # who talks to whom
    await expect(page.locator("#calls tbody tr")).to_contain_text("•••0003")
    await screenshot(page, "wallboard-answered")

    # a supervisor action from the page's menu reaches Asterisk, with a reason from the configuration
    await page.locator('#agents [data-interface="PJSIP/1003"]').click()
    menu = page.locator("dialog#menu")
    await menu.locator("select[name=reason]").select_option("training")
    await menu.locator("form.pause button[type=submit]").click()
    await expect(page.locator("#action-result")).to_contain_text("paused (Training)")
    member = web_server.sim.queue("support").members["PJSIP/1003"]
    assert member.paused and member.reason_paused == "training"
    await expect(page.locator('#agents [data-interface="PJSIP/1003"]')).to_have_attribute("data-state", "paused")
    await expect(page.locator('#agents [data-interface="PJSIP/1003"] .detail')).to_have_text("Training")
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
    await is_live(page)
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
    await expect(support.locator(".sl-big.sl-breached")).to_have_text("0%")
    await expect(page.locator("#abandoned tbody tr")).to_have_count(1)
    caller = support.locator("ol.callers li")
    await expect(caller).to_have_count(1)
    await expect(caller.locator(".bar")).to_have_class("bar long")  # past the 20 s threshold
    width = await caller.locator(".bar span").evaluate("node => node.getBoundingClientRect().width")
    assert width > 10, "the wait bar has no width (blocked style?)"
    first = await caller.locator(".wait").text_content()
    await expect(caller.locator(".wait")).not_to_have_text(first)  # the wait counts up between snapshots
    await expect(page.locator('#agents [data-interface="PJSIP/1002"]')).to_have_attribute("data-state", "in_call")
    await screenshot(page, "wallboard-busy")
    await done(page)


async def test_the_card_keeps_what_the_agent_chose_while_the_call_goes_on(browser, web_server):
    page = await logged_in(browser, web_server.url, "anna")
    await is_live(page)
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
    await expect(card.locator("form.disposition .status")).to_contain_text("Saved at")
    await expect(card).to_have_count(0, timeout=10_000)  # recorded and over: it goes by itself
    row = page.locator("#recent tbody tr").first
    await expect(row).to_contain_text("Call back")  # the outcome in words, with the date and the length
    await done(page)


async def test_pages_reconnect_by_themselves_and_follow_the_log_out(browser, web_server):
    from ivr.web.keys import SOCKETS

    page = await logged_in(browser, web_server.url, "anna")
    link = page.locator("#link")
    await expect(link).to_have_attribute("data-up", "1")
    await web_server.runner.app[SOCKETS].close_all()  # as if a proxy in between dropped them
    await expect(link).to_have_attribute("data-up", "0")
    await expect(link).to_have_attribute("data-up", "1", timeout=10_000)
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
    await is_live(page)
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


async def test_the_card_says_which_role_was_pressed_or_assumed(browser, web_server):
    """The IVR names roles as caller_id's Role.label does ("director of ООО Ромашка"); the card says which
    key meant which role, in the page's words, and the organisation once."""
    from ivr.agents.hub import agent_topic

    page = await logged_in(browser, web_server.url, "anna")
    await is_live(page)
    anna = web_server.agents["PJSIP/1001"]
    asked = ["private", "director of ООО Ромашка"]
    for call_id, question in (
        ("assumed-role", {"asked": asked, "pressed": "", "confirmed": False, "assumed": "director of ООО Ромашка"}),
        ("chosen-role", {"asked": asked, "pressed": "1", "chosen": "private", "confirmed": True}),
    ):
        await web_server.agent_side.hub.publish(agent_topic(anna), {
            "type": "screenpop", "call_id": call_id, "seq": 1, "state": "ringing", "at": 1.0, "queue": "support",
            "card": {"context": "found", "number": "+*******0003", "ivr": {
                "role_question": question, "dtmf": [{"step": "role", "pressed": question["pressed"]}]},
                "role": {"kind": "director", "label": "director of ООО Ромашка"},
                "organisation": {"id": 1, "name": "ООО Ромашка"}}})
    assumed = page.locator('article.card[data-call-id="assumed-role"]')
    await expect(assumed.locator(".ivr")).to_contain_text("1 — private client; 2 — director of ООО Ромашка")
    await expect(assumed.locator(".ivr")).to_contain_text("role not confirmed, routed as director of ООО Ромашка")
    chosen = page.locator('article.card[data-call-id="chosen-role"]')
    await expect(chosen.locator(".ivr")).to_contain_text("Pressed 1: private client.")
    meta = await chosen.locator(".meta").text_content()
    assert meta.count("ООО Ромашка") == 1 and "•••0003" in meta, meta
    await done(page)


# --- one screen for a whole contact center ----------------------------------------------------

FIRST = ("Анна", "Мария", "Елена", "Ольга", "Татьяна", "Наталья", "Ирина", "Светлана", "Константин", "Дмитрий",
         "Алексей", "Сергей", "Андрей", "Михаил", "Владимир", "Екатерина", "Юлия")
LAST = ("Смирнова", "Иванова", "Кузнецова", "Попова", "Соколова", "Лебедева", "Константинопольская", "Новикова",
        "Морозов", "Петров", "Волков", "Соловьёв", "Васильев", "Зайцев", "Павлов", "Семёнов", "Голубев")
AGENTS = 50


@dataclass
class Board:
    url: str
    sim: Any
    agents: list[Any]  # ivr.sim.demo.DemoAgent, in the order the scene uses them
    queues: list[str]


@pytest.fixture
async def demo_board(base_config, start_server) -> AsyncIterator[Board]:
    """The demo's queues (every queue the rules route to) in the demo's simulated Asterisk, with 50 agents
    (the CRM's and more with long names) in a busy moment: calls in progress in every queue, callers waiting,
    agents ringing, paused for each reason, logged out, calls answered and abandoned earlier."""
    from sqlalchemy import select

    from caller_id.models import Agent
    from ivr.services import AgentSide
    from ivr.config import AmiSettings
    from ivr.sim.demo import DemoAgent, demo_queues, login_of, simulator_for
    from ivr.web.app import address_of, start_web
    from ivr.web.auth import add_user

    server = await start_server(base_config)
    services = server.services
    async with services.db.session() as session:
        have = (await session.scalars(select(Agent).order_by(Agent.id))).all()
        for n in range(len(have), AGENTS):
            session.add(Agent(name=f"{FIRST[n % len(FIRST)]} {LAST[(n * 7) % len(LAST)]}",
                              interface=f"PJSIP/{2001 + n}", team="b2c"))
        await session.commit()
        rows = (await session.scalars(select(Agent).order_by(Agent.id).limit(AGENTS))).all()
    agents = [DemoAgent(a.id, a.interface, a.name, login_of(a.interface)) for a in rows]
    queues = demo_queues(base_config)
    sim = simulator_for(agents, queues)
    _paused_and_logged_out(sim, agents)  # before the server connects: it learns them from QueueStatus
    await sim.start()
    config = replace(base_config, ami=AmiSettings(host="127.0.0.1", port=sim.port, username=sim.username,
                                                  secret=sim.secret))
    agent_side = AgentSide(config, services)
    await agent_side.start()
    await agent_side.ami.wait_connected(10)
    runner = await start_web(services, agent_side, host="127.0.0.1", port=0)
    await add_user(services.db, "sup", PASSWORD, "supervisor")
    await add_user(services.db, "anna", PASSWORD, "agent", agents[0].id)
    try:
        _busy_moment(sim, agents, queues)
        # Its events are dated in the past, so the members' own status changes read as older than what the
        # first QueueStatus said; a resync (what every reconnection does) reads them afresh.
        resyncs = agent_side.queue_state.counters["resyncs"]
        agent_side.center._begin_resync()
        await eventually(lambda: agent_side.queue_state.counters["resyncs"] > resyncs)
        yield Board(f"http://{address_of(runner)}", sim, agents, queues)
    finally:
        await runner.cleanup()
        await agent_side.stop()
        await sim.close()


def _paused_and_logged_out(sim: Any, agents: list[Any]) -> None:
    import time

    reasons = ("break", "lunch", "after_call_work", "training", "meeting", "technical", "обучение новичков")
    for n, agent in enumerate(agents[25:33]):
        sim.clock = lambda n=n: time.time() - 60 - n * 90
        sim.pause_member(agent.interface, True, reasons[n % len(reasons)])
    sim.clock = time.time
    for agent in agents[33:36]:
        sim.set_device_state(agent.interface, 5)


def _busy_moment(sim: Any, agents: list[Any], queues: list[str]) -> None:
    """Asterisk's events of the last hour, oldest first (their Timestamps in the past, as Asterisk's clock was)."""
    import time

    def at(ago: float) -> None:
        sim.clock = lambda: time.time() - ago

    number = iter(range(1000, 9999))
    caller = lambda queue: sim.place_caller(queue, callerid=f'"" <7916000{next(number):04d}>').channel.uniqueid  # noqa: E731
    for n, agent in enumerate(agents[1:13]):  # answered and over
        at(3000 - n * 100)
        uid = caller(queues[n % len(queues)])
        sim.agent_answers(uid, agent.interface)
        at(2950 - n * 100)
        sim.complete_call(uid)
    for n in range(4):  # gave up waiting
        at(1300 - n * 100)
        uid = caller(queues[n])
        at(1250 - n * 100)
        sim.caller_hangs_up(uid)
    for n, agent in enumerate(agents[1:25]):  # talking now
        at(900 - n * 30)
        sim.agent_answers(caller(queues[n % len(queues)]), agent.interface)
    for n in range(14):  # waiting now, three of them ringing an agent
        at(150 - n * 10)
        uid = caller(queues[(n * 3) % len(queues)])
        if n >= 11:
            sim.ring_agent(uid, agents[36 + n - 11].interface)
    sim.clock = time.time


async def test_the_wallboard_fits_one_full_hd_screen_for_the_demo_s_queues_and_50_agents(browser, demo_board):
    page = await logged_in(browser, demo_board.url, "sup", width=1920, height=1080, locale="ru-RU")
    await is_live(page)
    assert await page.locator("html").get_attribute("lang") == "ru"
    assert len(demo_board.queues) == 7
    await expect(page.locator("article.queue")).to_have_count(7)
    cells = page.locator("#agents button.agent")
    await expect(cells).to_have_count(AGENTS)  # each agent once, whatever the queues
    await expect(page.locator("#agents [data-state=in_call]")).to_have_count(24)
    await expect(page.locator("#agents [data-state=paused]")).to_have_count(8)
    await expect(page.locator("#agents [data-state=unavailable]")).to_have_count(3)
    await expect(page.locator("#agents [data-state=ringing]")).to_have_count(3)
    await page.wait_for_timeout(1200)  # a tick: times in state counted
    await screenshot(page, "wallboard-1920x1080-ru", full_page=False)
    layout = await page.evaluate("""() => {
        const root = document.scrollingElement;
        const outside = [...document.querySelectorAll('article.queue, #agents button.agent, #totals, .side .panel')]
          .filter((n) => { const r = n.getBoundingClientRect(); return r.bottom > innerHeight || r.right > innerWidth; })
          .map((n) => n.dataset.interface || n.dataset.queue || n.id || n.className);
        return {height: root.scrollHeight, width: root.scrollWidth, innerHeight, innerWidth, outside};
    }""")
    assert layout["height"] <= layout["innerHeight"] and layout["width"] <= layout["innerWidth"], layout
    assert layout["outside"] == [], layout

    # supervisors' words, not codes; the same mask for every number; the time in state and the window
    text = await page.locator("main").inner_text()
    for code in ("in_call", "busy", "unavailable", "after_call_work", "leaveempty", "key_accounts", "after_hours"):
        assert code not in text, code
    for words in ("Разговор", "Пауза", "Не в сети", "Вызов", "Свободен", "Обед", "Обработка после звонка",
                  "обучение новичков", "положил трубку", "Ключевые клиенты"):
        assert words in text, words
    numbers = set(re.findall(r"[+*•\d]{5,}", text))
    assert numbers and all(re.fullmatch(r"•••\d{4}", n) for n in numbers), numbers
    talking = page.locator(f'#agents [data-interface="{demo_board.agents[24].interface}"]')
    assert re.fullmatch(r"\d+:\d\d", await talking.locator(".since").inner_text())
    await expect(page.locator("#window")).to_contain_text("Показатели за 24 ч")
    await expect(page.locator("#window")).to_contain_text("обновлено")
    await expect(page.locator("#calls tbody tr")).to_have_count(12)  # the longest first, the rest counted
    await expect(page.locator("#calls-more")).to_have_text("ещё 12")

    # the agents' answered calls add up to the answered figure of all queues (each agent once)
    answered = await page.evaluate("""() => [...document.querySelectorAll('#agents .answered')]
        .reduce((n, node) => n + Number(node.textContent), 0)""")
    total = await page.locator("#totals .figure", has_text="Принято").locator("b").inner_text()
    assert answered == int(total) == 12 + 24
    await done(page)


async def test_the_wallboard_menu_pauses_with_a_configured_reason_and_adds_an_agent_from_a_list(browser, demo_board):
    sim, queues = demo_board.sim, demo_board.queues
    page = await logged_in(browser, demo_board.url, "sup", width=1920, height=1080, locale="ru-RU")
    await is_live(page)
    free = demo_board.agents[40]
    await page.locator(f'#agents [data-interface="{free.interface}"]').click()
    menu = page.locator("dialog#menu")
    await expect(menu).to_be_visible()
    reasons = await menu.locator("select[name=reason] option").all_inner_texts()
    assert reasons == ["Перерыв", "Обед", "Обработка после звонка", "Обучение", "Совещание", "Технические проблемы"]
    await menu.locator("select[name=reason]").select_option("lunch")
    await screenshot(page, "wallboard-menu-ru", full_page=False)
    await menu.locator("form.pause button[type=submit]").click()
    await expect(page.locator("#action-result")).to_contain_text(f"{free.name}: пауза (Обед)")
    cell = page.locator(f'#agents [data-interface="{free.interface}"]')
    await expect(cell).to_have_attribute("data-state", "paused")
    await expect(cell.locator(".detail")).to_have_text("Обед")
    assert all(m.paused and m.reason_paused == "lunch" for _, m in sim.members_of(free.interface))

    # a member from queues.conf cannot be removed (Asterisk would refuse): the menu says so
    queue = queues[0]
    await cell.click()
    await expect(menu.locator(f'tr[data-queue="{queue}"] button.danger')).to_be_disabled()
    await menu.locator(".menu-foot button").click()

    # out of the queue (queues.conf edited), then added back from the picker of the CRM's agents, then removed
    sim.remove_member(queue, free.interface)
    tile = page.locator(f'article.queue[data-queue="{queue}"]')
    await expect(tile.locator(".agents")).to_contain_text("В сети 46")
    await tile.locator("button.add-agent").click()
    picker = menu.locator("select[name=agent]")
    await expect(picker.locator("option")).to_have_count(1)  # the only agent not in the queue
    await expect(picker.locator("option")).to_contain_text(free.name)
    await menu.locator("form.add button[type=submit]").click()
    await expect(page.locator("#action-result")).to_contain_text(f"{free.name} добавлен в очередь")
    assert free.interface in sim.queue(queue).members
    await expect(tile.locator(".agents")).to_contain_text("В сети 47")
    await cell.click()
    row = menu.locator(f'tr[data-queue="{queue}"]')
    await row.locator("button.danger").click()
    await expect(row.locator("button.danger")).to_have_text("Точно убрать?")  # a second click confirms
    await row.locator("button.danger").click()
    await expect(page.locator("#action-result")).to_contain_text(f"{free.name} убран из очереди")
    assert free.interface not in sim.queue(queue).members
    await done(page)


async def test_the_agent_sees_their_state_and_pauses_and_resumes_themselves(browser, demo_board):
    sim, anna = demo_board.sim, demo_board.agents[0]
    page = await logged_in(browser, demo_board.url, "anna", locale="ru-RU")
    await is_live(page)
    await expect(page.locator("#user-name")).to_have_text(anna.name)  # the name, not the log-in
    state = page.locator("#my-state")
    await expect(state).to_have_attribute("data-state", "available")
    await expect(page.locator("#my-state-word")).to_have_text("Свободен")
    await page.locator("#pause-reason").select_option("after_call_work")
    await page.locator("#pause-button").click()
    await expect(state).to_have_attribute("data-state", "paused")
    await expect(page.locator("#my-state-detail")).to_contain_text("Обработка после звонка")
    assert all(m.paused and m.reason_paused == "after_call_work" for _, m in sim.members_of(anna.interface))
    first = await page.locator("#my-state-time").inner_text()
    await expect(page.locator("#my-state-time")).not_to_have_text(first)  # the time in state counts
    await expect(page.locator("#resume-button")).to_be_visible()
    await screenshot(page, "agent-paused-ru")
    await page.locator("#resume-button").click()
    await expect(state).to_have_attribute("data-state", "available")
    assert not any(m.paused for _, m in sim.members_of(anna.interface))
    await done(page)


async def test_the_pages_speak_the_browser_s_language_and_keep_the_user_s_choice(browser, demo_board):
    english = await logged_in(browser, demo_board.url, "sup", width=1920, height=1080, locale="en-US")
    await is_live(english)
    assert await english.locator("html").get_attribute("lang") == "en"
    await expect(english.locator("#totals h2")).to_have_text("All queues")
    await expect(english.locator("#agents [data-state=in_call] .word").first).to_have_text("On a call")
    await expect(english.locator("#window")).to_contain_text("Figures of the last 24 h")
    await screenshot(english, "wallboard-1920x1080-en", full_page=False)
    await english.locator("header a.lang").click()  # the user's own choice wins over the browser's
    await expect(english.locator("html")).to_have_attribute("lang", "ru")
    await expect(english.locator("#totals h2")).to_have_text("Все очереди")
    await english.goto(demo_board.url + "/agent")
    await expect(english.locator("html")).to_have_attribute("lang", "ru")
    await done(english)


XSS = '<img src=x onerror="window.__xss=1">'


async def test_the_card_reads_the_ivr_in_words_and_shows_stored_markup_as_text(browser, web_server):
    import time

    from sqlalchemy import update

    from caller_id.models import Agent
    from ivr.agents.hub import agent_topic

    async with web_server.services.db.session() as session:
        await session.execute(update(Agent).where(Agent.interface == "PJSIP/1001").values(name=f"Анна {XSS}"))
        await session.commit()
    page = await logged_in(browser, web_server.url, "anna", locale="ru-RU")
    await is_live(page)
    await expect(page.locator("#user-name")).to_have_text(f"Анна {XSS}")
    await web_server.agent_side.hub.publish(agent_topic(web_server.agents["PJSIP/1001"]), {
        "type": "screenpop", "call_id": "ivr-words", "seq": 1, "state": "answered", "at": time.time() - 65,
        "queue": "support",
        "card": {"context": "found", "number": "+79000000003", "line": "b2c", "segment": "B",
                 "customer": {"id": 1, "name": f"Клиент {XSS}"},
                 "role": {"kind": "private", "label": "private"},
                 "open_cases": [{"id": 7, "title": f"<script>window.__xss=2</script>", "status": "escalated",
                                 "due_at": "2026-03-01T00:00:00+00:00"},
                                {"id": 8, "title": "Кредит", "status": "in_progress"}],
                 "ivr": {"self_service": {"contained": False, "reason": "needs_person", "declined": "card_pickup"},
                         "transcript": [
                             {"step": "offer", "said": "Вы звоните по поводу карты?", "heard": "1", "via": "dtmf",
                              "meaning": "yes"},
                             {"step": "helped", "said": "Помог ли ответ?", "heard": f"нет {XSS}", "via": "speech",
                              "meaning": "no"},
                             {"step": "rating", "said": "Оцените", "heard": "5", "via": "dtmf", "meaning": "5"}],
                         "degraded": ["lookup_timeout"]}}})
    card = page.locator('article.card[data-call-id="ivr-words"]')
    await expect(card).to_contain_text(f"Клиент {XSS}")
    ivr = card.locator(".ivr")
    await expect(ivr).to_contain_text("передало оператору (вопрос требует оператора)")
    await expect(ivr.locator('li[data-step="offer"]')).to_contain_text("Предложенная причина: нажал 1 — да")
    await expect(ivr.locator('li[data-step="helped"]')).to_contain_text(f"сказал «нет {XSS}» — нет")
    await expect(ivr.locator('li[data-step="rating"]')).to_contain_text("оценка 5 из 5")
    await expect(card).to_contain_text("#7 <script>window.__xss=2</script> — передано выше")
    await expect(card).to_contain_text("#8 Кредит — в работе")
    await expect(card.locator(".meta")).to_contain_text("•••0003 · линия B2C · очередь «Поддержка» · частный клиент")
    await expect(card.locator(".timer")).to_contain_text(re.compile(r"разговор 1:0\d"))  # since the answer
    text = await card.inner_text()
    await expect(ivr).to_contain_text("CRM не ответила вовремя")
    for code in ("needs_person", "escalated", "in_progress", "resolved", "offer:", "→", "timeout", "+7900"):
        assert code not in text, code
    await screenshot(page, "agent-card-ivr-ru")
    assert await page.evaluate("window.__xss") is None
    await done(page)
