"""Charts drawn on the server as SVG (no scripts, no CDN): lines and bars from plain numbers."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 480, 200, 36


def _frame(title: str, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">'
        f"<title>{escape(title)}</title>"
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>'
        f'<text x="{PAD}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>{body}</svg>'
    )


def _axes() -> str:
    bottom, right = HEIGHT - PAD, WIDTH - 10
    return (
        f'<line x1="{PAD}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>'
        f'<line x1="{PAD}" y1="26" x2="{PAD}" y2="{bottom}" stroke="#888"/>'
    )


def line_chart(title: str, points: list[tuple[float, float]], y_label: str = "") -> str:
    """A line through (x, y) points, scaled to fit; x is usually time."""
    if not points:
        return _frame(title, f'<text x="{PAD}" y="{HEIGHT // 2}" fill="#666">no data yet</text>')
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    top = max(ys) or 1
    plot_w, plot_h = WIDTH - PAD - 10, HEIGHT - PAD - 26

    def place(x: float, y: float) -> str:
        return f"{PAD + (x - x0) / (x1 - x0) * plot_w:.1f},{HEIGHT - PAD - y / top * plot_h:.1f}"

    path = " ".join(place(x, y) for x, y in points)
    labels = (
        f'<text x="{PAD - 4}" y="30" text-anchor="end">{top:g}</text>'
        f'<text x="{PAD - 4}" y="{HEIGHT - PAD}" text-anchor="end">0</text>'
        f'<text x="{WIDTH - 10}" y="{HEIGHT - 8}" text-anchor="end">{escape(y_label)}</text>'
    )
    return _frame(
        title, _axes() + labels + f'<polyline fill="none" stroke="#2a6fdb" stroke-width="2" points="{path}"/>'
    )


def bar_chart(title: str, bars: list[tuple[str, float]], unit: str = "") -> str:
    """One bar per (label, value)."""
    if not bars:
        return _frame(title, f'<text x="{PAD}" y="{HEIGHT // 2}" fill="#666">no data yet</text>')
    top = max(value for _, value in bars) or 1
    plot_w, plot_h = WIDTH - PAD - 10, HEIGHT - PAD - 26
    step = plot_w / len(bars)
    parts = [_axes()]
    for k, (label, value) in enumerate(bars):
        height = value / top * plot_h
        x = PAD + k * step + step * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{HEIGHT - PAD - height:.1f}" width="{step * 0.7:.1f}" height="{height:.1f}" '
            f'fill="#3c9d5d"><title>{escape(label)}: {value:g}{escape(unit)}</title></rect>'
            f'<text x="{x + step * 0.35:.1f}" y="{HEIGHT - PAD + 12}" text-anchor="middle">{escape(label[:12])}</text>'
            f'<text x="{x + step * 0.35:.1f}" y="{HEIGHT - PAD - height - 3:.1f}" text-anchor="middle">'
            f"{value:g}</text>"
        )
    return _frame(title, "".join(parts))
