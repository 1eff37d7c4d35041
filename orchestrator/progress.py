"""``orch run``'s live output: plain lines when piped; on a terminal, also a live block.

The block shows one line per running attempt (its step, role and elapsed
time), or a progress bar for a work order, redrawn in place below the event
lines. Nothing is redrawn when the output is not a terminal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

CLEAR_BELOW = "\x1b[J"
REDRAW_SECONDS = 0.5


def bar(done: int, total: int, width: int = 30) -> str:
    filled = round(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


class LiveProgress:
    """Event lines above, a redrawn block of running attempts below (terminals only)."""

    def __init__(self, stream: TextIO, rows: Callable[[], list[str]]) -> None:
        self.stream, self.rows = stream, rows
        self.lock = threading.Lock()
        self.drawn = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="orch-progress", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(2)
        with self.lock:
            self._erase()
            self.stream.flush()

    def line(self, text: str) -> None:
        """An event: printed above the block, which is then drawn again."""
        with self.lock:
            self._erase()
            self.stream.write(text + "\n")
            self._draw()

    def _erase(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F{CLEAR_BELOW}")
            self.drawn = 0

    def _draw(self) -> None:
        rows = self.rows()
        for row in rows:
            self.stream.write(row + "\n")
        self.drawn = len(rows)
        self.stream.flush()

    def _loop(self) -> None:
        while not self.stop_event.wait(REDRAW_SECONDS):
            with self.lock:
                self._erase()
                self._draw()


def attempt_rows(runner, total: int | None = None) -> Callable[[], list[str]]:
    """The live block's lines for a runner: a bar for a work order, then each running attempt."""

    def rows() -> list[str]:
        lines = []
        if total:
            lines.append(f"  {bar(len(runner.outcomes), total)} attempts finished")
        now = time.monotonic()
        for attempt in list(runner.attempts.values()):
            lines.append(f"  {attempt.item.id:<24} attempt {attempt.claim.attempt:<3} {attempt.phase:<22} "
                         f"{now - attempt.started:6.1f}s")  # fmt: skip
        return lines

    return rows
