"""Durations (``7d``, ``12h``, ISO 8601 ``P7D``) and schedules (``every 1h`` or cron)."""

from __future__ import annotations

import re
from datetime import timedelta

_SHORT = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_ISO = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EVERY = re.compile(r"^\s*every\s+(\d+\s*[smhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or an ISO 8601 duration like ``P7D``/``PT12H``."""
    m = _SHORT.match(text)
    if m:
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        iso = _ISO.match(text.strip().upper())
        if not iso or text.strip().upper() in ("P", "PT"):
            raise ValueError(f"{text!r} is not a duration; write e.g. 30m, 12h, 7d or P7D")
        parts = {k: int(v) if v else 0 for k, v in iso.groupdict().items()}
        seconds = (
            parts["w"] * 604800 + parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
        )
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return timedelta(seconds=seconds)


def check_schedule(text: str) -> str:
    """Validate ``every <duration>`` or a five-field cron expression; return it unchanged."""
    m = _EVERY.match(text)
    if m:
        parse_duration(m.group(1))
        return text
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"{text!r} is not a schedule; write e.g. 'every 1h' or a cron expression like '0 * * * *'")
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(text, timezone="UTC")
    except ValueError as e:
        raise ValueError(f"{text!r} is not a valid cron expression: {e}") from None
    return text
