"""``status --watch``: look every few seconds, print only when something changed."""

from __future__ import annotations

import time
from collections.abc import Callable


def watch(snapshot: Callable[[], str], interval: float, emit: Callable[[str], None],
          sleep: Callable[[float], None] = time.sleep, rounds: int | None = None) -> None:  # fmt: skip
    """Print ``snapshot()`` now and again whenever it differs; Ctrl-C ends it quietly."""
    last = None
    done = 0
    try:
        while rounds is None or done < rounds:
            current = snapshot()
            if current != last:
                emit(current)
                last = current
            done += 1
            if rounds is None or done < rounds:
                sleep(interval)
    except KeyboardInterrupt:
        return
