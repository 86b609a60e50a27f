"""The drift report's HTML read back as a user's program would: with the standard
library's parser, from the rows and ``data-`` attributes of its tables, not from the code
that wrote it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

# What a browser would fetch from elsewhere: an attribute pointing at a URL with a host,
# a CSS url(...) or @import of one.
EXTERNAL_LOAD = re.compile(
    r"""(?:\b(?:src|href|srcset|data)\s*=\s*["']?\s*(?:https?:)?//)|(?:url\(\s*["']?\s*(?:https?:)?//)|@import""",
    re.IGNORECASE,
)


@dataclass
class Reading:
    summary: str = ""
    signals: dict[str, dict] = field(default_factory=dict)
    alerts: list[dict] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.reading = Reading()
        self._row: dict | None = None
        self._in_summary = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "p" and attrs.get("id") == "summary":
            self._in_summary = True
        elif tag == "tr" and attrs.get("class") == "signal":
            self._row = {"state": attrs["data-state"] or None}
            self.reading.signals[attrs["data-signal"]] = self._row
        elif tag == "tr" and attrs.get("class") == "alert":
            self.reading.alerts.append({"alert_id": attrs["data-alert"], "signal": attrs["data-signal"]})
        elif tag == "tr" and attrs.get("class") == "version":
            self.reading.versions.append(attrs["data-version"])
        elif tag == "td" and self._row is not None and "data-value" in attrs:
            name = attrs["class"].split()[-1].replace("-", "_")
            value = attrs["data-value"]
            self._row[name] = float(value) if value else None

    def handle_endtag(self, tag):
        if tag == "p":
            self._in_summary = False
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._in_summary:
            self.reading.summary += data


def read_report(html: str) -> Reading:
    reader = _Reader()
    reader.feed(html)
    reader.reading.summary = " ".join(reader.reading.summary.split())
    return reader.reading


def external_loads(html: str) -> list[str]:
    """Every place the document would load something from another host."""
    return [html[max(0, m.start() - 60) : m.end() + 60] for m in EXTERNAL_LOAD.finditer(html)]
