"""How ``stats``, ``maintain`` and ``history --search`` look on a terminal: Rich tables with
small charts, search hits with their matched words highlighted.

Sparklines for the per-hour and per-day series and size bars for the tables; everything fits
80 columns, and wider terminals get the bars and an extra column. Imported by the CLI only.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ._models import ArchiverStats, IdentityStats, SearchHit
from ._monitoring import MaintenanceRun

__all__ = [
    "bar",
    "human_bytes",
    "render_maintenance",
    "render_search_hit",
    "render_stats",
    "snippet_text",
    "sparkline",
]

_SPARKS = "▁▂▃▄▅▆▇█"
#: Shown for a metric with no value (no samples, no users).
NONE = "n/a"
#: Width of the label column, the same in every section so the values line up.
LABEL_WIDTH = 20


# ------------------------------------------------------------------------------------------------
# charts and numbers
# ------------------------------------------------------------------------------------------------


def sparkline(values: Sequence[int | float]) -> Text:
    """One character per value, ``▁``…``█`` scaled to the largest; a zero is a dim dot."""
    top = max(values, default=0)
    line = Text()
    for value in values:
        if value <= 0 or top <= 0:
            line.append("·", style="dim")
        else:
            level = max(1, math.ceil(value / top * len(_SPARKS)))
            line.append(_SPARKS[level - 1], style="cyan")
    return line


def bar(value: float, top: float, width: int) -> Text:
    """A horizontal bar of ``width`` cells at most, proportional to ``value / top``."""
    if top <= 0 or value <= 0:
        return Text("")
    cells = max(1, round(value / top * width))
    return Text("█" * cells, style="cyan")


def human_bytes(size: int) -> str:
    """1536 → ``1.5 kB`` (powers of 1024, as ``pg_size_pretty``)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _seconds(value: float | None) -> str:
    if value is None:
        return NONE
    if value < 0:
        return "-" + _seconds(-value)
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.{digits}f}"


# ------------------------------------------------------------------------------------------------
# stats
# ------------------------------------------------------------------------------------------------


def _section(title: str) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=None,
        show_header=False,
        pad_edge=False,
        padding=(0, 2, 0, 0),
    )
    table.add_column("metric", style="bold", no_wrap=True, min_width=LABEL_WIDTH)
    table.add_column("value", overflow="fold")
    return table


def render_stats(
    stats: IdentityStats,
    archiver: ArchiverStats | None,
    *,
    width: int,
    archiver_note: str | None = None,
) -> RenderableType:
    """The ``stats`` screen: archival, users, storage; charts sized to ``width`` columns."""
    archival, users = stats.archival, stats.users
    hours = archival.archived_per_hour
    days = users.new_per_day

    health = _section(f"Archival · last 24 h to {stats.as_of:%Y-%m-%d %H:%M} UTC")
    peak = max((h.count for h in hours), default=0)
    health.add_row(
        "archived",
        Text.assemble(
            f"{archival.archived_24h:,} conversations  ",
            sparkline([h.count for h in hours]),
            (f"  peak {peak:,}/h", "dim"),
        ),
    )
    if hours:
        health.add_row(
            "", Text(f"{hours[0].hour:%H}h … {hours[-1].hour:%H}h, one mark an hour", "dim")
        )
    health.add_row(
        "latency",
        f"avg {_seconds(archival.latency_avg_seconds)} · "
        f"p95 {_seconds(archival.latency_p95_seconds)} · "
        f"{archival.latency_samples:,} with an end or expiry",
    )
    health.add_row(
        "before expiry",
        f"avg {_seconds(archival.before_expiry_avg_seconds)} · "
        f"closest {_seconds(archival.before_expiry_min_seconds)} · "
        f"{archival.expiry_samples:,} with an expiry",
    )
    if archiver is not None:
        c = archiver.counters
        health.add_row(
            "failed attempts",
            f"{archiver.failed_attempts:,} (conversations {c.get('failed', 0):,}, crashed passes "
            f"{c.get('pass_errors', 0):,}) · dead letters {archiver.dead_letters:,}",
        )
        health.add_row(
            "since counters began",
            f"passes {c.get('passes', 0):,} · archived {c.get('archived', 0):,} · re-archived "
            f"{c.get('rearchived', 0):,} · linked {c.get('linked', 0):,}",
        )
        alive = len(archiver.heartbeats)
        last = max((str(b.get("at", "")) for b in archiver.heartbeats), default="")
        health.add_row(
            "archivers",
            f"{alive} alive" + (f", last beat {last[:19].replace('T', ' ')} UTC" if last else ""),
        )
        health.add_row(
            "unlinked",
            f"{archival.unlinked_conversations:,} in the database · "
            f"{archiver.unlinked_pending:,} waiting for a user in Redis",
        )
    else:
        health.add_row("unlinked", f"{archival.unlinked_conversations:,} in the database")
        health.add_row("failed attempts", Text(archiver_note or "Redis not read", "yellow"))

    growth = _section("Users")
    rate = f"{users.returning_rate:.1%}" if users.returning_rate is not None else NONE
    growth.add_row("total", f"{users.total:,} · returning {users.returning:,} ({rate})")
    growth.add_row(
        "new per day",
        Text.assemble(
            f"{users.new_30d:,} in 30 days  ",
            sparkline([d.count for d in days]),
            (f"  peak {max((d.count for d in days), default=0):,}/day", "dim"),
        ),
    )
    if days:
        growth.add_row("", Text(f"{days[0].day:%b %d} … {days[-1].day:%b %d}", "dim"))
    growth.add_row(
        "conversations",
        f"per user: median {_number(users.conversations_per_user_median)} · p95 "
        f"{_number(users.conversations_per_user_p95)} · mean "
        f"{_number(users.conversations_per_user_mean, 2)}",
    )

    return Group(health, Text(""), growth, Text(""), *_storage_tables(stats, width))


def _storage_tables(stats: IdentityStats, width: int) -> list[RenderableType]:
    tables = stats.storage.tables
    charts = width >= 100
    top = max((t.total_bytes for t in tables), default=0)
    sizes = Table(
        title="Storage",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    sizes.add_column("table", no_wrap=True)
    sizes.add_column("rows≈", justify="right", no_wrap=True)
    sizes.add_column("data", justify="right", no_wrap=True)
    sizes.add_column("indexes", justify="right", no_wrap=True)
    sizes.add_column("total", justify="right", no_wrap=True)
    if charts:
        sizes.add_column("", no_wrap=True, width=16)
    sizes.add_column("seq/idx scans", justify="right", no_wrap=True)
    for t in tables:
        row: list[RenderableType] = [
            t.name,
            f"{t.rows_estimate:,}",
            human_bytes(t.table_bytes),
            human_bytes(t.index_bytes),
            human_bytes(t.total_bytes),
        ]
        if charts:
            row.append(bar(t.total_bytes, top, 16))
        row.append(f"{t.seq_scans:,}/{t.index_scans:,}")
        sizes.add_row(*row)

    indexes = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    indexes.add_column("index", overflow="fold", min_width=20)
    indexes.add_column("size", justify="right", no_wrap=True)
    indexes.add_column("scans", justify="right", no_wrap=True)
    if charts:
        indexes.add_column("table", no_wrap=True)
    for index in stats.storage.indexes:
        unused = index.scans == 0 and not index.unique
        name = Text(index.name, style="yellow" if unused else "")
        row = [name, human_bytes(index.bytes), Text(f"{index.scans:,}", "yellow" if unused else "")]
        if charts:
            row.append(index.table)
        indexes.add_row(*row)
    note = Text("yellow: an index never used since the statistics were reset", "dim")
    return [sizes, indexes, note]


def render_maintenance(run: MaintenanceRun) -> RenderableType:
    """``maintain``'s report: one line per task (under 80 columns), the removed conversations."""
    lines: list[RenderableType] = []
    if run.dry_run:
        lines.append(Text("dry run: nothing was changed", style="bold yellow"))
    first = run.event_batches[0] if run.event_batches else None
    before = f" (before {first.cutoff:%Y-%m-%d %H:%M} UTC)" if first else ""
    events = f"events older than {run.events_older_than_days} days{before}: "
    if run.dry_run:
        lines.append(Text(events + f"{run.events_eligible or 0:,} would move"))
    else:
        batches = len(run.event_batches)
        lines.append(
            Text(events + f"moved {run.events_moved:,} in {batches} batch{'es' * (batches != 1)}")
        )
    removed = run.removed
    unlinked = f"conversations unlinked for more than {run.unlinked_older_than_days} days: "
    if run.dry_run:
        eligible = run.unlinked_eligible or 0
        shown = f" ({len(removed):,} listed)" if eligible > len(removed) else ""
        lines.append(Text(unlinked + f"{eligible:,} would be deleted{shown}"))
    else:
        lines.append(Text(unlinked + f"deleted {len(removed):,}"))
    if removed:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("conversation", overflow="fold")
        table.add_column("merchant or user", overflow="fold")
        table.add_column("messages", justify="right", no_wrap=True)
        table.add_column("archived (UTC)", no_wrap=True)
        for conversation in removed:
            who = conversation.pending_user_id or conversation.merchant_id or ""
            table.add_row(
                Text(conversation.source_id or str(conversation.id)),
                Text(who),
                f"{conversation.message_count:,}",
                f"{conversation.created_at:%Y-%m-%d %H:%M}",
            )
        lines.append(table)
    if run.analyze is not None:
        tables = ", ".join(run.analyze.tables)
        lines.append(Text(f"analyze: {tables}" + (" (not run)" if run.dry_run else "")))
    return Group(*lines)


# ------------------------------------------------------------------------------------------------
# history --search
# ------------------------------------------------------------------------------------------------

#: How a matched word of a snippet is shown (rich drops the style when stdout is no terminal).
MATCH_STYLE = "bold black on yellow"
_MARK_RE = re.compile(r"<mark>(.*?)</mark>", re.DOTALL)


def snippet_text(snippet: str) -> Text:
    """A search snippet (HTML-escaped, matches in ``<mark>`` tags) as text for the terminal:
    entities decoded, tags removed, each match in :data:`MATCH_STYLE`."""
    text = Text()
    last = 0
    for match in _MARK_RE.finditer(snippet):
        text.append(html.unescape(snippet[last : match.start()]))
        text.append(html.unescape(match.group(1)), style=MATCH_STYLE)
        last = match.end()
    text.append(html.unescape(snippet[last:]))
    return text


def render_search_hit(hit: SearchHit) -> RenderableType:
    """One hit: a heading line (id, workflow, start, messages, rank), then its snippet."""
    heading = Text.assemble(
        (hit.conversation_id, "bold"),
        f"  {hit.workflow_name or '-'}  {hit.started_at:%Y-%m-%d %H:%M}  "
        f"{hit.message_count} messages  rank {hit.rank:.3f}",
    )
    body = Text("  ").append_text(snippet_text(hit.snippet or ""))
    return Group(Text(""), heading, body)
