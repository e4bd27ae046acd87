"""The /stats "picture of the week": a PNG with reports per week by category on top and open versus
closed reports per week below.

Pure rendering: callers pass counts and already translated text, nothing here touches the database or
the catalogs. The renderer builds its own `Figure` and Agg canvas instead of using pyplot, whose global
figure registry is not thread safe; the bot calls `render_png` through `asyncio.to_thread`. Styles are
passed per call so that nothing changes matplotlib's global rcParams under another thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from bot.domain import dates

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.font_manager import FontProperties

WIDTH_IN = 10.0
HEIGHT_IN = 8.0
DPI = 100  # 1000 x 800 px: legible in a Telegram preview, small enough to send as a photo

# Okabe–Ito: distinguishable under the common colour-vision deficiencies.
PALETTE: tuple[str, ...] = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#F0E442",  # yellow
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#000000",  # black
)
# There are more categories (11) than colours, so each further turn of the palette adds a hatch to keep
# two categories with the same colour apart.
HATCHES: tuple[str, ...] = ("", "//", "..", "xx")
OPEN_COLOUR = "#D55E00"  # vermillion: still needs attention
CLOSED_COLOUR = "#0072B2"  # blue

# DejaVu Sans ships with matplotlib and covers Latin (with Uzbek ʻ), Cyrillic and Kyrgyz ң ө ү, so the
# chart never depends on fonts installed on the host.
FONT_FAMILY = "DejaVu Sans"
TEXT_COLOUR = "#222222"
GRID_COLOUR = "#DDDDDD"
BAR_EDGE = "white"  # also the hatch colour, which keeps hatches visible on every palette colour
# Beyond this many weeks the per-bar counts and every date label would overlap at 1000 px; the chart then
# thins the date labels and leaves the counts to the y axis.
MAX_LABELLED_WEEKS = 16


@dataclass(frozen=True)
class WeeklyPicture:
    """Everything the weekly chart shows, text already translated."""

    title: str
    weeks: Sequence[date]  # the Monday of each week, oldest first
    by_category: Mapping[str, Sequence[int]]  # category label -> reports per week; order = legend order
    opened: Sequence[int]  # per week of creation: reports still new, in progress or verified
    closed: Sequence[int]  # per week of creation: reports closed or rejected
    reports_axis: str
    open_label: str
    closed_label: str
    by_category_title: str
    open_closed_title: str


def render_png(picture: WeeklyPicture) -> bytes:
    """Draw `picture` as a 1000x800 PNG; the same input gives the same bytes.

    Raises ValueError when a series does not have one count per week or holds a negative count.
    """
    _validate(picture)

    # Imported here: matplotlib takes a noticeable part of a second to import and only /stats needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    fonts = _Fonts(
        title=FontProperties(family=FONT_FAMILY, size=15, weight="bold"),
        subtitle=FontProperties(family=FONT_FAMILY, size=12),
        label=FontProperties(family=FONT_FAMILY, size=10),
        small=FontProperties(family=FONT_FAMILY, size=9),
    )
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, facecolor="white", layout="constrained")
    canvas = FigureCanvasAgg(figure)
    figure.suptitle(picture.title, fontproperties=fonts.title, color=TEXT_COLOUR)
    top, bottom = figure.subplots(2, 1, sharex=True)

    positions = list(range(len(picture.weeks)))
    stride = max(1, math.ceil(len(positions) / MAX_LABELLED_WEEKS))
    last = len(positions) - 1
    # Counted back from the newest week, which is the one coordinators look for.
    ticks = [dates.week(week) if (last - n) % stride == 0 else "" for n, week in enumerate(picture.weeks)]
    _draw_categories(top, picture, positions, fonts)
    _draw_open_closed(bottom, picture, positions, fonts)
    for axes in (top, bottom):
        _style_axes(axes, picture.reports_axis, fonts)
    # Shared x: the labels live on the bottom axes only; the top keeps its ticks without text.
    bottom.set_xticks(positions, ticks, fontproperties=fonts.label, color=TEXT_COLOUR)
    top.tick_params(axis="x", labelbottom=False)
    if positions:
        bottom.set_xlim(-0.6, len(positions) - 0.4)

    buffer = io.BytesIO()
    # No "Software" entry: the PNG should not advertise the matplotlib version, and it keeps output stable.
    canvas.print_png(buffer, metadata={"Software": None})  # type: ignore[no-untyped-call]  # untyped in matplotlib
    return buffer.getvalue()


@dataclass(frozen=True)
class _Fonts:
    title: FontProperties
    subtitle: FontProperties
    label: FontProperties
    small: FontProperties


def _validate(picture: WeeklyPicture) -> None:
    """Reject series that do not line up with the weeks, before any drawing starts."""
    expected = len(picture.weeks)
    series: list[tuple[str, Sequence[int]]] = [
        *((f"by_category[{label!r}]", counts) for label, counts in picture.by_category.items()),
        ("opened", picture.opened),
        ("closed", picture.closed),
    ]
    for name, counts in series:
        if len(counts) != expected:
            raise ValueError(f"{name} has {len(counts)} values, expected one per week ({expected})")
        if any(count < 0 for count in counts):
            raise ValueError(f"{name} has a negative count: {list(counts)}")


def _draw_categories(axes: Axes, picture: WeeklyPicture, positions: list[int], fonts: _Fonts) -> None:
    """Stacked bars per week, one layer per category that had any report in the period."""
    bottoms = [0] * len(positions)
    index = 0
    for label, counts in picture.by_category.items():
        if not any(counts):
            # Left out entirely so that the legend lists only what the bars show.
            continue
        turn, slot = divmod(index, len(PALETTE))
        axes.bar(
            positions,
            list(counts),
            width=0.7,
            bottom=bottoms,
            label=label,
            color=PALETTE[slot],
            edgecolor=BAR_EDGE,
            linewidth=0.6,
            hatch=HATCHES[turn % len(HATCHES)] or None,
        )
        bottoms = [below + count for below, count in zip(bottoms, counts, strict=True)]
        index += 1
    # Exact totals, since reading a sum off a stack of segments is guesswork.
    for position, total in zip(positions, bottoms, strict=True):
        if total and len(positions) <= MAX_LABELLED_WEEKS:
            axes.annotate(
                str(total),
                (position, total),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontproperties=fonts.small,
                color=TEXT_COLOUR,
            )
    _set_headroom(axes, max(bottoms, default=0))
    axes.set_title(picture.by_category_title, fontproperties=fonts.subtitle, color=TEXT_COLOUR, loc="left")
    if index:
        # Beside the plot, not over it: up to 11 long labels would hide the bars.
        axes.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            prop=fonts.small,
            frameon=False,
            labelcolor=TEXT_COLOUR,
        )


def _draw_open_closed(axes: Axes, picture: WeeklyPicture, positions: list[int], fonts: _Fonts) -> None:
    """Open and closed bars side by side per week of creation."""
    width = 0.38
    for offset, counts, label, colour in (
        (-width / 2, picture.opened, picture.open_label, OPEN_COLOUR),
        (width / 2, picture.closed, picture.closed_label, CLOSED_COLOUR),
    ):
        bars = axes.bar(
            [position + offset for position in positions],
            list(counts),
            width=width,
            label=label,
            color=colour,
            edgecolor=BAR_EDGE,
            linewidth=0.6,
        )
        if len(positions) <= MAX_LABELLED_WEEKS:
            axes.bar_label(
                bars,
                labels=[str(count) if count else "" for count in counts],
                padding=2,
                fontproperties=fonts.small,
                color=TEXT_COLOUR,
            )
    _set_headroom(axes, max([*picture.opened, *picture.closed], default=0))
    axes.set_title(picture.open_closed_title, fontproperties=fonts.subtitle, color=TEXT_COLOUR, loc="left")
    axes.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        prop=fonts.small,
        frameon=False,
        labelcolor=TEXT_COLOUR,
    )


def _set_headroom(axes: Axes, highest: int) -> None:
    """Start at zero and leave room above the tallest bar for its count; an empty chart still gets 0..1."""
    axes.set_ylim(0, max(highest * 1.15, highest + 0.5, 1))


def _style_axes(axes: Axes, y_label: str, fonts: _Fonts) -> None:
    """Integer y ticks, a light horizontal grid behind the bars, no box on top and right."""
    from matplotlib.ticker import MaxNLocator

    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(y_label, fontproperties=fonts.label, color=TEXT_COLOUR)
    axes.tick_params(labelfontfamily=FONT_FAMILY, labelsize=9, labelcolor=TEXT_COLOUR, colors=TEXT_COLOUR)
    axes.set_axisbelow(True)
    axes.grid(axis="y", color=GRID_COLOUR, linewidth=0.8)
    axes.grid(axis="x", visible=False)
    axes.set_facecolor("white")
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
