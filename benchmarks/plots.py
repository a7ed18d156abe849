"""One PNG per result: medians with min-max whiskers per unit, the ratios, and any raw samples.

A scenario that measures a figure against a parameter (the scaling run) draws lines instead:
:func:`lines`, one panel per :class:`Curves`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from benchmarks.report import fmt
from benchmarks.results import Result

COLOURS = {"ours": "tab:blue", "raw": "tab:gray", "pouchdb": "tab:orange"}


def _colour(name: str, default: str) -> str:
    return COLOURS.get(name.split(" ", 1)[0], default)


def _bars(
    ax: Axes, names: list[str], values: list[list[float]], xlabel: str, default: str, by_side: bool = True
) -> None:
    medians = [statistics.median(v) for v in values]
    low = [m - min(v) for m, v in zip(medians, values, strict=True)]
    high = [max(v) - m for m, v in zip(medians, values, strict=True)]
    ax.barh(
        names, medians, xerr=[low, high], color=[_colour(n, default) if by_side else default for n in names], capsize=3
    )
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    right = max(max(v) for v in values)
    ax.set_xlim(0, right * 1.15 if right > 0 else 1)
    for y, (m, v) in enumerate(zip(medians, values, strict=True)):
        ax.annotate(f"  {fmt(m)}", (max(v), y), va="center", fontsize=7)


def _save(fig: Figure, result: Result, path: Path) -> Path:
    """Title the figure with the run (scenario, backend, mode, CPUs), write it, and free it."""
    mode = "quick" if result.quick else "full"
    fig.suptitle(f"{result.scenario} on {result.backend} ({mode}, {result.machine.get('cpus')} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(result: Result, path: Path) -> Path:
    by_unit: dict[str, list[str]] = {}
    for name in result.figures:
        by_unit.setdefault(result.units.get(name, ""), []).append(name)
    panels = len(by_unit) + (1 if result.ratios else 0) + len(result.series)
    heights = [max(1.2, 0.35 * len(names) + 0.8) for names in by_unit.values()]
    heights += [max(1.2, 0.35 * len(result.ratios) + 0.8)] * (1 if result.ratios else 0)
    heights += [2.5] * len(result.series)
    fig, axes = plt.subplots(panels, 1, figsize=(9, sum(heights) + 1), height_ratios=heights, squeeze=False)
    panel = iter(axes[:, 0])
    for unit, names in by_unit.items():
        _bars(next(panel), names, [result.figures[n] for n in names], f"{unit} (median, min-max)", "tab:blue")
    if result.ratios:
        ax = next(panel)
        names = list(result.ratios)
        _bars(
            ax, names, [result.ratios[n] for n in names], "ratio, same repetition (median, min-max)", "tab:green", False
        )
        ax.axvline(1.0, color="grey", linewidth=0.8)
    for name, samples in result.series.items():
        ax = next(panel)
        ax.hist(samples, bins=50, color="tab:orange")
        ax.set_xlabel(name)
        ax.set_ylabel("count")
    return _save(fig, result, path)


@dataclass(frozen=True)
class Curves:
    """One panel of :func:`lines`: for each label, the figure names measured at each of ``xs``."""

    xlabel: str
    ylabel: str
    xs: list[float]
    curves: dict[str, list[str]]
    logx: bool = False
    logy: bool = False


def lines(result: Result, path: Path, panels: list[Curves]) -> Path:
    """Medians with min-max whiskers against a parameter, one panel per :class:`Curves`; missing points are skipped."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.4 * len(panels) + 1), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        for label, names in panel.curves.items():
            points = [(x, result.figures[n]) for x, n in zip(panel.xs, names, strict=True) if result.figures.get(n)]
            if not points:
                continue
            xs = [x for x, _ in points]
            medians = [statistics.median(v) for _, v in points]
            low = [m - min(v) for m, (_, v) in zip(medians, points, strict=True)]
            high = [max(v) - m for m, (_, v) in zip(medians, points, strict=True)]
            ax.errorbar(xs, medians, yerr=[low, high], marker="o", capsize=3, label=label)
            for x, m in zip(xs, medians, strict=True):
                ax.annotate(f" {fmt(m)}", (x, m), fontsize=7)
        if panel.logx:
            ax.set_xscale("log")
        if panel.logy:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xticks(panel.xs, [fmt(x) for x in panel.xs])
        ax.minorticks_off()
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a run stopped early may have no point to draw
            ax.legend(fontsize=8)
    return _save(fig, result, path)
