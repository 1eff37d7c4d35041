"""Wall-clock helpers: one format for every timestamp orch writes."""

from __future__ import annotations

import time


def now_iso(now: float | None = None) -> str:
    """UTC time as ``2026-11-25T20:30:00Z``: sortable, and the same in QUEUE.md and logs."""
    moment = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def parse_iso(text: str) -> float | None:
    """Seconds since the epoch for a time orch wrote, or None if it is not one."""
    if not text:
        return None
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00", 1) if text.endswith("Z") else text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
