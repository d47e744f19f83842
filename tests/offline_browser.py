"""Headless Chromium with every request outside loopback blocked (shared by tests).

The system Chromium (/usr/bin/chromium, Debian's package) is driven by Playwright;
no browser is ever downloaded. The ``browser`` fixture in conftest.py launches it.
"""

from __future__ import annotations

import base64
from typing import Any

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

LOCAL = ("http://127.0.0.1:", "data:")

EMPTY_LOG = {"console": [], "failed": [], "blocked": [], "http_errors": []}


def open_offline(
    browser: Any,
    url: str | None = None,
    *,
    allowed: tuple[str, ...] = LOCAL,
    viewport: tuple[int, int] = (1000, 700),
) -> tuple[Any, dict[str, list[Any]]]:
    """A page that blocks requests not starting with ``allowed`` and logs problems.

    The log holds console errors and page errors, failed requests, blocked requests
    and HTTP responses >= 400; a clean page leaves it equal to :data:`EMPTY_LOG`.
    When ``url`` is given the page is opened (``load``) before returning.
    """
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    log: dict[str, list[Any]] = {key: [] for key in EMPTY_LOG}
    page.on(
        "console",
        lambda m: log["console"].append(m.text) if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: log["console"].append(str(e)))
    page.on("requestfailed", lambda r: log["failed"].append(r.url))
    page.on(
        "response",
        lambda r: (
            log["http_errors"].append((r.status, r.url)) if r.status >= 400 else None
        ),
    )

    def gate(route: Any) -> None:
        if route.request.url.startswith(allowed):
            route.continue_()
        else:
            log["blocked"].append(route.request.url)
            route.abort()

    page.route("**/*", gate)
    if url is not None:
        page.goto(url, wait_until="load")
    return page, log


PAINTED_JS = """
(selector) => {
  let painted = 0;
  for (const c of document.querySelectorAll(selector)) {
    if (!c.width || !c.height) continue;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++;
  }
  return painted;
}
"""

_STATS_JS = """
async (b64) => {
  const img = new Image();
  img.src = 'data:image/png;base64,' + b64;
  await img.decode();
  const c = document.createElement('canvas');
  c.width = img.width; c.height = img.height;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0, s = 0, s2 = 0; const colours = new Set();
  for (let i = 0; i < d.length; i += 4) {
    const v = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    n++; s += v; s2 += v * v;
    if (colours.size < 5000) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  }
  const mean = s / n;
  return {variance: s2 / n - mean * mean, colours: colours.size, width: c.width};
}
"""


def screenshot_stats(browser: Any, png: bytes) -> dict[str, float]:
    """Width, luminance variance and colour count of a PNG (blank pages score ~0)."""
    probe = browser.new_page()
    try:
        return probe.evaluate(_STATS_JS, base64.b64encode(png).decode("ascii"))
    finally:
        probe.close()
