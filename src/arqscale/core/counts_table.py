"""Queue counts as a plain-text table: ``arqscale status`` and the demo's live view."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from arqscale.core.models import QueueCounts

COLUMNS = (
    "QUEUE", "WAITING", "ACTIVE", "DELAYED", "PAUSED", "COMPLETED", "FAILED", "BACKLOG", "OLDEST", "WORKERS", "STATE",
)  # fmt: skip


def _row(c: QueueCounts, workers: Mapping[str, int]) -> tuple[str, ...]:
    return (
        c.queue,
        str(c.waiting),
        str(c.active),
        str(c.delayed),
        str(c.paused),
        str(c.completed),
        str(c.failed),
        str(c.backlog),
        f"{c.oldest_waiting_seconds:.1f}s",
        str(workers.get(c.queue, 0)),
        "paused" if c.is_paused else "running",
    )


def render(counts: Iterable[QueueCounts], workers: Mapping[str, int]) -> str:
    """Left-aligned names, right-aligned numbers, two spaces between columns."""
    rows = [COLUMNS, *(_row(c, workers) for c in counts)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(r[1:-1], widths[1:-1], strict=True)]
        cells.append(r[-1].ljust(widths[-1]))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
