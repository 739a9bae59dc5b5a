"""The timeline chart of one disruption: requests/s by status class, markers, recovery shaded, version served."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rehearsal_lib.disruption.harness import Req

COLOURS = {"2xx": "#2da44e", "3xx": "#8250df", "4xx": "#bf8700", "5xx": "#cf222e", "no answer": "#57606a"}


def timeline_figure(title: str, reqs: list[Req], markers: dict[str, float],
                    recovery: tuple[float, float] | None = None,
                    versions: list[tuple[float, str | None]] | None = None) -> Any:
    """Stacked bars per second of intended send time; a vertical line per marker; `recovery` (from, to) shaded;
    the version served (when sampled) as a step line on a second axis."""
    import plotly.graph_objects as go

    counts: Counter = Counter((int(max(0.0, r.t)), r.status_class) for r in reqs)
    seconds = list(range(0, max((s for s, _ in counts), default=0) + 1))
    fig = go.Figure()
    for cls, colour in COLOURS.items():
        ys = [counts.get((s, cls), 0) for s in seconds]
        if any(ys):
            fig.add_bar(x=[s + 0.5 for s in seconds], y=ys, name=cls, marker_color=colour)
    for name, t in markers.items():
        fig.add_vline(x=t, line_dash="dash", line_color="#24292f", annotation_text=name.replace("_", " "),
                      annotation_position="top")
    if recovery is not None:
        fig.add_vrect(x0=recovery[0], x1=recovery[1], fillcolor="#2da44e", opacity=0.12, line_width=0,
                      annotation_text="recovery", annotation_position="bottom left")
    if versions:
        fig.add_scatter(x=[t for t, _ in versions], y=[v or "no answer" for _, v in versions], yaxis="y2",
                        mode="lines", line_shape="hv", name="version served", line_color="#0969da")
        fig.update_layout(yaxis2={"title": "version", "overlaying": "y", "side": "right", "type": "category"})
    fig.update_layout(title=title, barmode="stack", xaxis_title="seconds since the traffic started",
                      yaxis_title="requests/s", height=360, legend={"orientation": "h", "y": -0.25})
    return fig
