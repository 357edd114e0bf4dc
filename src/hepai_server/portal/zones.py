"""The viewer's time zone: pages show times in it, and say which it is.

The portal's script stores the browser's zone (``Intl``'s IANA name) in a cookie, and the
sign-in form sends it along, so pages rendered on the server show local times from the first
page on. Without it (no script yet), times are UTC, and pages say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ZONE_COOKIE = "hepai_tz"
#: IANA names are letters, digits and ``/_+-``; anything else is not looked up at all.
ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+){0,2}")


@dataclass(frozen=True, slots=True)
class Zone:
    """A time zone and how pages name it."""

    name: str
    info: tzinfo

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.info)

    def format(self, moment: datetime | None, pattern: str = "%Y-%m-%d %H:%M") -> str:
        return "" if moment is None else self.local(moment).strftime(pattern)

    def label(self, now: datetime) -> str:
        """``Asia/Shanghai (UTC+08:00)``."""
        offset = now.astimezone(self.info).strftime("%z") or "+0000"
        return f"{self.name} (UTC{offset[:3]}:{offset[3:]})"


UTC_ZONE = Zone("UTC", UTC)


def zone_named(name: str | None) -> Zone:
    """The zone a cookie names, or UTC for none, a malformed or an unknown name."""
    if not name or len(name) > 64 or not ZONE_NAME.fullmatch(name):
        return UTC_ZONE
    try:
        return Zone(name, ZoneInfo(name))
    except (ZoneInfoNotFoundError, ValueError):
        return UTC_ZONE
