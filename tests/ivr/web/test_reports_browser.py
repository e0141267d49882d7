"""The reports page in a real browser (Debian's headless Chromium through Playwright): the charts are
drawn under the page's Content-Security-Policy, a filter redraws them, a segment opens its calls; an
agent is refused the page.  The dataset is the hand-counted week of tests/queues/test_reports.py."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.ivr.web.test_browser import browser, done, logged_in, screenshot  # noqa: F401 - browser: a fixture
from tests.ivr.web.test_reports import base_config, reports_server  # noqa: F401 - fixtures

WEEK = "/reports?period=week&date=2026-03-25&dimension=segment"


async def painted(page: Page, canvas: str) -> int:
    """How many pixels of the canvas are not blank, once Chart.js drew it."""
    return await page.locator(canvas).evaluate("""(node) => {
        if (!window.Chart || !Chart.getChart(node)) return 0;
        const {width, height} = node;
        const pixels = node.getContext("2d").getImageData(0, 0, width, height).data;
        let drawn = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn++;
        return drawn;
    }""")


async def test_a_supervisor_sees_the_charts_filters_and_drills_down_into_a_segment(browser, reports_server):
    page = await logged_in(browser, reports_server.url, "sup")
    await page.goto(reports_server.url + WEEK)
    await expect(page.locator("body")).to_have_attribute("data-loaded", "segment:2026-03-23:day")
    for canvas in ("#chart-calls", "#chart-rates", "#chart-satisfaction"):
        assert await painted(page, canvas) > 1000, canvas
    rows = page.locator("#rows tbody tr")
    await expect(rows).to_have_count(5)  # A, B, C, not known, total
    await expect(rows.nth(1)).to_contain_text("67%")  # B: 2 of 3 abandoned
    await expect(page.locator("#status")).to_contain_text("11 calls")
    await expect(page.locator("#buckets tbody tr")).to_have_count(7)
    assert await page.evaluate("Chart.getChart(document.getElementById('chart-calls')).data.datasets.length") == 4
    await screenshot(page, "reports-week")

    # a filter: the b2b line only
    await page.locator("select[name=line]").select_option("b2b")
    await expect(page.locator("#status")).to_contain_text("2 calls")
    await expect(page.locator("#rows tbody tr")).to_have_count(2)  # B and the total
    assert "line=b2b" in page.url
    await page.locator("select[name=line]").select_option("")
    await expect(page.locator("#status")).to_contain_text("11 calls")

    # segment B's calls
    await page.locator("#rows button.drill", has_text="B").click()
    drill = page.locator("#drill")
    await expect(drill).to_be_visible()
    await expect(page.locator("#drill-title")).to_contain_text("(3)")
    await expect(drill.locator("tbody tr")).to_have_count(3)
    await expect(drill.locator('tr[data-call-id="c3"]')).to_contain_text("transferred")
    href = await drill.locator('tr[data-call-id="c3"] a').get_attribute("href")
    assert href == "/api/v1/calls/c3"
    await screenshot(page, "reports-drill-down")

    # the period by month, weeks as buckets: the charts are drawn again
    await page.locator("select[name=period]").select_option("month")
    await page.locator("select[name=bucket]").select_option("week")
    await expect(page.locator("body")).to_have_attribute("data-loaded", "segment:2026-03-01:week")
    await expect(page.locator("#buckets tbody tr")).to_have_count(6)
    assert await painted(page, "#chart-rates") > 1000
    await done(page)


async def test_an_agent_is_refused_the_reports_page(browser, reports_server):
    page = await logged_in(browser, reports_server.url, "anna")
    response = await page.goto(reports_server.url + WEEK)
    assert response.status == 403
    await expect(page.locator("body")).to_contain_text("this needs the supervisor role")
    await expect(page.locator("canvas")).to_have_count(0)
    await done(page)
