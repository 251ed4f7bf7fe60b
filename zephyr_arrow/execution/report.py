"""The HTML report of a run record: one self-contained file that opens offline.

Sections: the run; the plan as a graph of stages (rows and bytes on the edges); a timeline of
task attempts per worker, coloured by stage, retries and failures marked; per stage the
distribution of task seconds and rows (where skew shows); counters over time; failures with
their tracebacks; the environment.

Charts are SVG drawn here rather than with a charting library: the handful of shapes needed
take less code than a library's bundle would add to every report (Plotly's is 3.5 MB), and
nothing is fetched. A timeline of many attempts is one ``<path>`` per stage and status, not
an element per attempt, so 20,000 tasks stay a small file that renders at once.
"""

from __future__ import annotations

import html
import json
import statistics
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zephyr_arrow.execution.run_record import RunRecord

# Up to this many attempts each is an element of its own with a tooltip; beyond, one path per stage.
DETAILED_ATTEMPTS = 2000
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac", "#ff9da7", "#86bcb6")
_FAILED = "#d62728"
_STATUS_CLASS = {"succeeded": "ok", "running": "running"}
_WIDTH = 1000


def render_report(record: RunRecord, live: dict[str, Any] | None = None, refresh_seconds: float | None = None) -> str:
    """The report of ``record`` as one HTML document; the live dashboard adds the running stage
    (``RunRecorder.live``) and has the browser reload it every ``refresh_seconds``."""
    attempts = record.tasks.table.to_pylist()
    by_stage: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for attempt in attempts:
        by_stage[attempt["stage_index"]].append(attempt)
    sections = [
        _summary(record, attempts),
        _live(live) if live is not None else "",
        _section("plan", "Plan", _plan_graph(record.stages) + f"<pre>{_e(record.plan)}</pre>"),
        _section("timeline", "Timeline of task attempts per worker", _timeline(record, attempts)),
        _section("stages", "Stages", _stages(record.stages, by_stage)),
        _section("counters", "Counters over time", _counters(record)),
        _section("failures", "Failures", _failures(attempts)),
        _section("environment", "Environment", f"<pre>{_e(json.dumps(record.environment, indent=2, default=str))}</pre>"),
    ]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        + (f"<meta http-equiv='refresh' content='{refresh_seconds:g}'>" if refresh_seconds else "")
        + f"<title>zephyr_arrow run {_e(record.run_id)}</title><style>{_CSS}</style></head><body>"
        + "".join(sections)
        + "</body></html>"
    )


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f5f5f5}td.name{text-align:left;max-width:420px;word-break:break-all}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px;max-height:400px}
.failed{color:#d62728;font-weight:bold}.ok{color:#2a7d2a;font-weight:bold}.running{color:#b58900;font-weight:bold}
svg text{font:11px system-ui,sans-serif}.legend span{display:inline-block;margin-right:12px}
.swatch{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _section(section_id: str, title: str, body: str) -> str:
    return f"<section id='{section_id}'><h2>{_e(title)}</h2>{body}</section>"


def _colour(stage_index: int) -> str:
    return _PALETTE[stage_index % len(_PALETTE)]


def _bytes(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(num) < 1024 or unit == "TB":
            return f"{num:,.0f} {unit}" if unit == "B" else f"{num:,.1f} {unit}"
        num /= 1024
    return f"{num:,.1f} TB"


def _summary(record: RunRecord, attempts: list[dict[str, Any]]) -> str:
    status = f"<span class='{_STATUS_CLASS.get(record.status, 'failed')}' id='status'>{_e(record.status)}</span>"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.started_at))
    retried = sum(1 for a in attempts if a["attempt"] > 0)
    lost = sum(1 for a in attempts if a["status"] in ("failed", "died"))
    first, _, rest = record.error.partition("\n")
    error = f"<p class='failed' id='error'>{_e(first)}</p>" if first else ""
    if rest.strip():
        error += f"<details><summary>the whole message</summary><pre>{_e(rest.strip())}</pre></details>"
    return (
        f"<h1>zephyr_arrow run <code>{_e(record.run_id)}</code>: {status}</h1>"
        f"<p>Started {started}, took {record.ended_at - record.started_at:,.2f} s; {len(record.stages)} stages, "
        f"<span id='num-attempts'>{len(attempts)}</span> task attempts ({retried} retries, {lost} failed or lost to a dead worker).</p>"
        + error
    )


def _live(live: dict[str, Any]) -> str:
    eta = "unknown" if live["eta_seconds"] is None else f"{live['eta_seconds']:,.0f} s"
    running = "".join(
        f"<tr><td>{r['shard_index']}</td><td>{r['attempt']}</td><td>{r['worker']}</td><td>{r['seconds']:.1f}</td></tr>"
        for r in live["running"]
    )
    return _section(
        "live",
        "Now",
        f"<p>Stage [{live['stage_index']}] <b>{_e(live['stage'])}</b>: <span id='live-done'>{live['done']}</span> of "
        f"<span id='live-total'>{live['num_tasks']}</span> tasks done, {live['tasks_per_second']:.2f} tasks/s, ETA {eta}.</p>"
        "<table id='running'><tr><th>shard</th><th>attempt</th><th>worker</th><th>running for s</th></tr>" + running + "</table>"
        "<h3>Workers</h3><table id='workers'><tr><th>worker</th><th>host:pid</th><th>memory (RSS)</th><th>CPU s so far</th></tr>"
        + "".join(
            f"<tr><td>{w['worker']}</td><td>{_e(w['host'])}:{w['pid']}</td>"
            f"<td>{'?' if w['rss_bytes'] is None else _bytes(w['rss_bytes'])}</td>"
            f"<td>{'?' if w['cpu_seconds'] is None else format(w['cpu_seconds'], '.1f')}</td></tr>"
            for w in live["workers"]
        )
        + "</table>",
    )


def _plan_graph(stages: list[dict[str, Any]]) -> str:
    """Stages as boxes in columns by depth; an edge per input, labelled with the rows and bytes it carried."""
    if not stages:
        return "<p>No stage ran.</p>"
    by_index = {stage["index"]: stage for stage in stages}
    depth: dict[int, int] = {}
    for stage in sorted(stages, key=lambda s: s["index"]):
        upstream = [depth[i] + 1 for i in (*stage["inputs"], *stage["broadcast"]) if i in depth]
        depth[stage["index"]] = max(upstream, default=0)
    columns: dict[int, list[int]] = defaultdict(list)
    for index in sorted(depth):
        columns[depth[index]].append(index)
    box_w, box_h, gap_x, gap_y = 190, 54, 130, 26
    positions = {
        index: (20 + column * (box_w + gap_x), 20 + row * (box_h + gap_y))
        for column, indices in columns.items()
        for row, index in enumerate(indices)
    }
    width = 40 + (max(columns) + 1) * (box_w + gap_x)
    height = 40 + max(len(indices) for indices in columns.values()) * (box_h + gap_y)
    # A wide plan is scaled down to the page rather than cut off.
    parts = [f"<svg id='plan-graph' width='{width}' height='{height}' viewBox='0 0 {width} {height}' style='max-width:100%;height:auto'>",
             "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' markerHeight='7' orient='auto'>"
             "<path d='M0,0L10,5L0,10z' fill='#666'/></marker></defs>"]
    for stage in stages:
        x, y = positions[stage["index"]]
        for upstream in (*stage["inputs"], *stage["broadcast"]):
            if upstream not in positions:
                continue
            ux, uy = positions[upstream]
            source = by_index[upstream]
            x1, y1, x2, y2 = ux + box_w, uy + box_h / 2, x, y + box_h / 2
            parts.append(f"<line x1='{x1}' y1='{y1}' x2='{x2}' y2='{y2}' stroke='#666' marker-end='url(#arrow)'/>")
            label = f"{source['rows_out']:,} rows, {_bytes(source['bytes_out'])}"
            parts.append(f"<text class='edge' x='{(x1 + x2) / 2}' y='{(y1 + y2) / 2 - 4}' text-anchor='middle'>{_e(label)}</text>")
    for stage in stages:
        x, y = positions[stage["index"]]
        stroke = _FAILED if stage["status"] == "failed" else "#333"
        name = stage["name"]
        short = name if len(name) <= 32 else name[:14] + "…" + name[-17:]
        parts.append(
            f"<g class='stage'><title>{_e(name)}</title><rect x='{x}' y='{y}' width='{box_w}' height='{box_h}' rx='5' "
            f"fill='{_colour(stage['index'])}' fill-opacity='0.25' stroke='{stroke}' stroke-width='1.5'/>"
            f"<text x='{x + 6}' y='{y + 16}'>[{stage['index']}] {_e(stage['kind'])}</text>"
            f"<text x='{x + 6}' y='{y + 31}'>{_e(short)}</text>"
            f"<text x='{x + 6}' y='{y + 46}'>{stage['num_tasks']} tasks, {stage['wall_seconds']:.2f} s</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _timeline(record: RunRecord, attempts: list[dict[str, Any]]) -> str:
    """One lane per worker slot; an attempt is a bar from its start to its end, coloured by stage.
    A failed or lost attempt is outlined in red; a retry (attempt > 0) has a dark cap."""
    if not attempts:
        return "<p>No task ran.</p>"
    start = min(a["started_at"] for a in attempts)
    span = max(max(a["ended_at"] for a in attempts) - start, 1e-6)
    workers = sorted({a["worker"] for a in attempts})
    lane = {worker: row for row, worker in enumerate(workers)}
    lane_h, left, plot_w = 18, 110, _WIDTH - 130
    height = 30 + len(workers) * lane_h

    def x(t: float) -> float:
        return round(left + (t - start) / span * plot_w, 2)

    parts = [f"<svg id='timeline-chart' width='{_WIDTH}' height='{height}' viewBox='0 0 {_WIDTH} {height}'>"]
    for worker, row in lane.items():
        pids = sorted({(a["host"], a["pid"]) for a in attempts if a["worker"] == worker and a["pid"]})
        title = ", ".join(f"{host}:{pid}" for host, pid in pids)
        parts.append(f"<text x='4' y='{row * lane_h + 13}'><title>{_e(title)}</title>worker {worker}</text>")
    for tick in range(6):
        tx = left + plot_w * tick / 5
        parts.append(f"<line x1='{tx}' y1='0' x2='{tx}' y2='{height - 18}' stroke='#eee'/>"
                     f"<text x='{tx}' y='{height - 4}' text-anchor='middle'>{span * tick / 5:.2f} s</text>")
    if len(attempts) <= DETAILED_ATTEMPTS:
        for a in attempts:
            y = lane[a["worker"]] * lane_h + 1
            x1 = x(a["started_at"])
            w = max(x(a["ended_at"]) - x1, 0.8)
            lost = a["status"] in ("failed", "died")
            stroke = f" stroke='{_FAILED}' stroke-width='1.5'" if lost else ""
            tip = (f"stage {a['stage_index']} shard {a['shard_index']} attempt {a['attempt']}: {a['status']}, "
                   f"{a['seconds']:.3f} s, {a['rows_in']:,} rows in, {a['rows_out']:,} out" + (f"; {a['error']}" if a["error"] else ""))
            parts.append(f"<rect class='attempt {a['status']}' x='{x1}' y='{y}' width='{w:.2f}' height='{lane_h - 3}' "
                         f"fill='{_colour(a['stage_index'])}'{stroke}><title>{_e(tip)}</title></rect>")
            if a["attempt"] > 0:
                parts.append(f"<rect x='{x1}' y='{y}' width='{w:.2f}' height='3' fill='#222'/>")
    else:
        paths: dict[tuple[int, bool], list[str]] = defaultdict(list)
        caps: list[str] = []
        for a in attempts:
            y = lane[a["worker"]] * lane_h + 1
            x1 = x(a["started_at"])
            w = max(x(a["ended_at"]) - x1, 0.8)
            paths[(a["stage_index"], a["status"] in ("failed", "died"))].append(f"M{x1} {y}h{w:.2f}v{lane_h - 3}h{-w:.2f}z")
            if a["attempt"] > 0:
                caps.append(f"M{x1} {y}h{w:.2f}v3h{-w:.2f}z")
        for (stage_index, lost), shapes in sorted(paths.items()):
            stroke = f" stroke='{_FAILED}' stroke-width='1.5'" if lost else ""
            parts.append(f"<path class='stage-{stage_index}' fill='{_colour(stage_index)}'{stroke} d='{''.join(shapes)}'/>")
        if caps:
            parts.append(f"<path fill='#222' d='{''.join(caps)}'/>")
    parts.append("</svg>")
    legend = "".join(
        f"<span><i class='swatch' style='background:{_colour(s['index'])}'></i>[{s['index']}] {_e(s['kind'])}</span>"
        for s in record.stages if s["num_attempts"]
    )
    legend += f"<span><i class='swatch' style='border:2px solid {_FAILED}'></i>failed or lost</span>"
    legend += "<span><i class='swatch' style='background:#222;height:3px'></i>retry</span>"
    return f"<p class='legend'>{legend}</p>" + "".join(parts)


def _stages(stages: list[dict[str, Any]], by_stage: dict[int, list[dict[str, Any]]]) -> str:
    head = ("<tr><th>stage</th><th>kind</th><th>name</th><th>status</th><th>tasks</th><th>attempts</th><th>rows in</th>"
            "<th>rows out</th><th>bytes in</th><th>bytes out</th><th>wall s</th><th>CPU s</th><th>peak RSS</th>"
            "<th>median task s</th><th>max task s (shard)</th><th>skew</th></tr>")
    rows, charts = [], []
    for stage in stages:
        ok = [a for a in by_stage.get(stage["index"], []) if a["status"] == "ok"]
        times = [a["seconds"] for a in ok]
        slowest = max(ok, key=lambda a: a["seconds"]) if ok else None
        slowest_text = f"{slowest['seconds']:.3f} ({slowest['shard_index']})" if slowest else ""
        rows.append(
            f"<tr class='stage-row' data-stage='{stage['index']}'><td>{stage['index']}</td><td>{_e(stage['kind'])}</td>"
            f"<td class='name'>{_e(stage['name'])}</td><td class='{stage['status']}'>{stage['status']}</td>"
            f"<td class='num-tasks'>{stage['num_tasks']}</td><td>{stage['num_attempts']}</td>"
            f"<td>{stage['rows_in']:,}</td><td>{stage['rows_out']:,}</td><td>{_bytes(stage['bytes_in'])}</td>"
            f"<td>{_bytes(stage['bytes_out'])}</td><td>{stage['wall_seconds']:.2f}</td><td>{stage['cpu_seconds']:.2f}</td>"
            f"<td>{_bytes(stage['peak_rss_bytes'])}</td><td>{statistics.median(times) if times else 0:.3f}</td>"
            f"<td>{slowest_text}</td><td>{stage['skew']:.2f}</td></tr>"
        )
        if len(ok) > 1:
            charts.append(
                f"<div class='distribution'><h3>[{stage['index']}] {_e(stage['kind'])}: {len(ok)} tasks</h3>"
                + _histogram("task seconds", times, _colour(stage["index"]))
                + _histogram("rows out per task", [a["rows_out"] for a in ok], _colour(stage["index"]))
                + "</div>"
            )
    return f"<table id='stage-table'>{head}{''.join(rows)}</table>" + "".join(charts)


def _histogram(title: str, values: list[float], colour: str, bins: int = 30) -> str:
    low, high = min(values), max(values)
    width, height, left = 460, 110, 40
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / (high - low) * bins), bins - 1) if high > low else 0] += 1
    top = max(counts)
    bar_w = (width - left - 10) / bins
    bars = "".join(
        f"<rect x='{left + i * bar_w:.1f}' y='{90 - 80 * c / top:.1f}' width='{bar_w - 1:.1f}' height='{80 * c / top:.1f}' fill='{colour}'/>"
        for i, c in enumerate(counts) if c
    )
    fmt = (lambda v: f"{v:.3g}") if isinstance(high, float) else (lambda v: f"{v:,}")
    return (
        f"<svg class='histogram' width='{width}' height='{height}'><text x='{left}' y='9'>{_e(title)} (tasks per bin, max {top})</text>"
        f"{bars}<text x='{left}' y='104'>{fmt(low)}</text><text x='{width - 10}' y='104' text-anchor='end'>{fmt(high)}</text></svg>"
    )


def _counters(record: RunRecord) -> str:
    samples = record.counter_samples
    names = sorted(record.counters)
    if not names:
        return "<p>The run counted nothing.</p>"
    final = "".join(f"<tr><td class='name'>{_e(name)}</td><td>{record.counters[name]:,}</td></tr>" for name in names)
    table = f"<table id='counter-table'><tr><th>counter</th><th>final</th></tr>{final}</table>"
    span = max((s["seconds"] for s in samples), default=0) or 1e-6
    width, height, left = 460, 120, 40
    charts = []
    for index, name in enumerate(names[:24]):
        points = [(s["seconds"], s["counters"].get(name, 0)) for s in samples]
        top = max((v for _, v in points), default=0) or 1
        line = " ".join(f"{left + t / span * (width - left - 10):.1f},{100 - 90 * v / top:.1f}" for t, v in points)
        charts.append(
            f"<svg class='counter-chart' width='{width}' height='{height}'><text x='{left}' y='9'>{_e(name)} (max {top:,})</text>"
            f"<polyline fill='none' stroke='{_PALETTE[index % len(_PALETTE)]}' stroke-width='2' points='{line}'/>"
            f"<text x='{left}' y='114'>0 s</text><text x='{width - 10}' y='114' text-anchor='end'>{span:.2f} s</text></svg>"
        )
    return table + "".join(charts)


def _failures(attempts: list[dict[str, Any]]) -> str:
    lost = [a for a in attempts if a["status"] in ("failed", "died")]
    if not lost:
        return "<p>No attempt failed.</p>"
    return "".join(
        f"<div class='failure'><p><b>stage {a['stage_index']}, shard {a['shard_index']}, attempt {a['attempt']}</b> "
        f"on worker {a['worker']} ({_e(a['host'] or '?')}:{a['pid'] or '?'}): <span class='failed'>{_e(a['status'])}</span> "
        f"{_e(a['error'])}</p>" + (f"<details><summary>traceback</summary><pre>{_e(a['traceback'])}</pre></details>" if a["traceback"] else "")
        + "</div>"
        for a in lost
    )
