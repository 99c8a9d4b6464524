"""The report's figures, drawn with matplotlib's object API (Figure + Agg canvas, no pyplot state),
so that building a report never depends on or changes a display backend.

Each function returns a Figure (or None when there is nothing to draw); `render` turns it into
PNG and SVG bytes, which report.py writes atomically and embeds.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

DPI = 110


def _colors(models: list[str]) -> dict[str, tuple]:
    """One fixed colour per model (params order), the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(models) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(models)}


def _grid(n: int, width: float = 5.2, height: float = 4.0, cols: int = 2) -> tuple[Figure, list]:
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, never over a data point (the layout makes room for it)."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def render(fig: Figure) -> tuple[bytes, bytes]:
    """(PNG bytes, SVG bytes) of a figure."""
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, bbox_inches="tight")  # legends outside the axes stay in
    fig.set_layout_engine("none")  # keep the layout just computed: the SVG matches and costs half
    fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})  # no timestamp: same input, same file
    return png.getvalue(), svg.getvalue()


# ---------------------------------------------------------------- accuracy vs cost
def pareto_front(cost: list[float], accuracy: list[float]) -> list[int]:
    """Indices of the points no other point beats (cost <= and accuracy >=, one strictly), by cost."""
    order = sorted(range(len(cost)), key=lambda i: (cost[i], -accuracy[i]))
    front, best = [], -math.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


def accuracy_vs_gflops(summary: pd.DataFrame, models: list[str], views: str) -> Figure | None:
    """Top-1 (mean over splits) against GFLOPs per clip, one panel per dataset; a model's dense and
    pruned points are joined by a line; the dashed step line is the Pareto front of all points."""
    summary = summary.dropna(subset=["top1", "gflops"])
    summary = summary[summary["gflops"] > 0]
    if summary.empty:
        return None
    datasets = list(dict.fromkeys(summary["dataset"]))
    colors = _colors(models)
    fig, axes = _grid(len(datasets))
    for ax, ds in zip(axes, datasets):
        part = summary[summary["dataset"] == ds]
        for model, points in part.groupby("model", sort=False):
            points = points.sort_values("gflops")
            color = colors.get(model, "black")
            ax.plot(points["gflops"], points["top1"], "-", color=color, alpha=0.6, linewidth=1)
            dense = points[points["variant"] == "dense"]
            pruned = points[points["variant"] != "dense"]
            ax.scatter(dense["gflops"], dense["top1"], marker="o", color=color, label=model, zorder=3)
            ax.scatter(pruned["gflops"], pruned["top1"], marker="v", color=color, zorder=3)
            for row in pruned.itertuples():
                ax.annotate(f"{row.ratio:g}", (row.gflops, row.top1), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color=color)
        front = pareto_front(part["gflops"].tolist(), part["top1"].tolist())
        xs = part["gflops"].to_numpy()[front]
        ys = part["top1"].to_numpy()[front]
        ax.step(xs, ys, where="post", linestyle="--", color="grey", linewidth=1, label="Pareto front")
        ax.set_xscale("log")
        plain = FuncFormatter(lambda value, _pos: f"{value:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.set_xlabel("GFLOPs per clip (log scale)")
        ax.set_ylabel(f"top-1 % ({views}, mean over splits)")
        ax.set_title(f"{ds}: accuracy vs cost (o dense, v pruned)")
        ax.grid(True, alpha=0.3)
        _legend_outside(ax)
    return fig


def accuracy_vs_ratio(summary: pd.DataFrame, models: list[str], views: str) -> Figure | None:
    """Top-1 against the pruning ratio (0 = dense), one line per model, one panel per dataset;
    error bars are the std over splits where more than one split was run."""
    summary = summary.dropna(subset=["top1"])
    if summary.empty or not (summary["variant"] != "dense").any():
        return None
    datasets = list(dict.fromkeys(summary["dataset"]))
    colors = _colors(models)
    fig, axes = _grid(len(datasets))
    for ax, ds in zip(axes, datasets):
        part = summary[summary["dataset"] == ds]
        for model, points in part.groupby("model", sort=False):
            points = points.sort_values("ratio")
            err = points["top1_std"].fillna(0.0).to_numpy()
            ax.errorbar(points["ratio"], points["top1"], yerr=err if err.any() else None, marker="o",
                        capsize=3, color=colors.get(model, "black"), label=model)
        ax.set_xlabel("pruning ratio (channels removed; 0 = dense)")
        ax.set_ylabel(f"top-1 % ({views})")
        ax.set_title(f"{ds}: accuracy vs pruning ratio")
        ax.grid(True, alpha=0.3)
        _legend_outside(ax)
    return fig


# ---------------------------------------------------------------- training
def training_curves(dataset: str, histories: dict[str, pd.DataFrame], models: list[str], split: int) -> Figure | None:
    """Training loss and accuracy (validation dashed, if carved) per epoch, one line per model."""
    if not histories:
        return None
    colors = _colors(models)
    fig, (loss_ax, acc_ax) = _grid(2, width=5.6, height=3.8)
    for model, history in histories.items():
        color = colors.get(model, "black")
        if "train_loss" in history:
            loss_ax.plot(history["epoch"], history["train_loss"], color=color, label=model)
        if "val_loss" in history and history["val_loss"].notna().any():
            loss_ax.plot(history["epoch"], history["val_loss"], "--", color=color)
        if "train_acc" in history:
            acc_ax.plot(history["epoch"], 100 * history["train_acc"], color=color, label=model)
        if "val_acc" in history and history["val_acc"].notna().any():
            acc_ax.plot(history["epoch"], 100 * history["val_acc"], "--", color=color)
    loss_ax.set(xlabel="epoch", ylabel="loss", title=f"{dataset} split {split}: training loss (dashed: validation)")
    acc_ax.set(xlabel="epoch", ylabel="accuracy %", title=f"{dataset} split {split}: training accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        _legend_outside(ax)
    return fig


# ---------------------------------------------------------------- confusion
def confusion_matrices(dataset: str, panels: list[tuple[str, list[str], list[list[int]]]]) -> Figure | None:
    """Row-normalised confusion matrices (rows: true class), one panel per (title, classes, matrix);
    counts are printed in the cells when the classes are few enough to read."""
    if not panels:
        return None
    classes = max(len(c) for _, c, _ in panels)
    side = min(4.0 + 0.28 * classes, 11.0)
    fig, axes = _grid(len(panels), width=side, height=side * 0.9)
    for ax, (title, names, matrix) in zip(axes, panels):
        counts = np.asarray(matrix, dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
        if len(names) <= 30:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
        if len(names) <= 15:
            for (i, j), value in np.ndenumerate(counts):
                if value:
                    ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
        ax.set(xlabel="predicted", ylabel="true", title=title)
        fig.colorbar(image, ax=ax, shrink=0.7, label="fraction of the true class")
    return fig
