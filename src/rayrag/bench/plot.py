"""results.png: rank-0 seconds per retrieval call (grouped bars by backend and workers, the floor as a line),
and the index memory of each backend at the largest worker count."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

LOG_SCALE_RATIO = 4.0
"""The latency axis turns logarithmic when the slowest bar exceeds this many times the median bar."""
MAX_COPY_LINES = 8
"""Index copies marked with a dashed line in the memory panel (beyond that the lines would be noise)."""


def plot(path: Path, rows: list[dict], floor: dict, title: str) -> None:
    """Write the two-panel figure for `rows` (see report.COLUMNS) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(r["backend"] for r in rows))
    color = {b: plt.get_cmap("tab10")(i) for i, b in enumerate(backends)}
    fig, (ax, mem) = plt.subplots(1, 2, figsize=(15, 6.8), gridspec_kw={"width_ratios": [2.2, 1]})
    _latency_panel(ax, rows, floor, backends, color)
    _memory_panel(mem, rows, floor, backends, color)
    fig.suptitle("\n".join(textwrap.wrap(title.replace("\n", " | "), 170)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_panel(ax, rows: list[dict], floor: dict, backends: list[str], color: dict) -> None:
    """Grouped bars of rank-0 seconds per call by workers and backend, the floor and one read of the index."""
    workers = sorted({r["workers"] for r in rows})
    cell = {(r["backend"], r["workers"]): r for r in rows}
    width = 0.8 / len(backends)
    x = np.arange(len(workers))
    for i, b in enumerate(backends):
        ys = np.array([cell[(b, w)]["rank0_mean_s"] if (b, w) in cell else np.nan for w in workers])
        bars = ax.bar(x + (i - (len(backends) - 1) / 2) * width, ys, width, label=b, color=color[b])
        for bar, y in zip(bars, ys):
            if np.isfinite(y):
                ax.annotate(f"{y:.3g}", (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.axhline(floor["search_s"], color="black", linestyle="--", linewidth=1,
               label=f"floor: best in-process search of {floor['queries']} queries ({floor['search_s']:.3g} s)")
    ax.axhline(floor["stream_s"], color="grey", linestyle=":", linewidth=1,
               label=f"index read once from RAM ({floor['stream_s']:.3g} s)")
    ax.set_xticks(x, [f"{w} worker{'s' * (w > 1)}" for w in workers])
    seconds = [r["rank0_mean_s"] for r in rows] + [floor["search_s"]]
    if max(seconds) > LOG_SCALE_RATIO * float(np.median(seconds)):  # one slow backend would flatten the rest
        ax.set_yscale("log")
        ax.set_ylim(min(seconds + [floor["stream_s"]]) * 0.7, max(seconds) * 6)
        ax.set_ylabel("seconds per retrieval call on rank 0 (mean, log scale)")
    else:
        ax.set_ylim(0, max(seconds) * 1.45)
        ax.set_ylabel("seconds per retrieval call on rank 0 (mean)")
    ax.set_title("Retrieval call latency on rank 0 (lower is better)")
    ax.legend(fontsize=8, loc="upper left", ncol=2)


def _memory_panel(mem, rows: list[dict], floor: dict, backends: list[str], color: dict) -> None:
    """Horizontal bars of the index holders' memory growth at the largest worker count, split by what it is."""
    w_mem = max(r["workers"] for r in rows)
    cell = {(r["backend"], r["workers"]): r for r in rows}
    mrows = [cell[(b, w_mem)] for b in backends if (b, w_mem) in cell]
    one = floor["index_bytes"] / 2**20
    vals = [r["index_memory_bytes"] / 2**20 for r in mrows]
    names = [r["backend"] for r in mrows]
    # the growth, split: the mapped index file, the mapped Arrow passages, and the rest (private memory)
    file_ = np.array([r["mapped_index_file_bytes"] / 2**20 for r in mrows])
    arrow = np.array([r["mapped_passages_bytes"] / 2**20 for r in mrows])
    rest = np.maximum(np.array(vals) - file_ - arrow, 0)
    bars = mem.barh(names, file_, color=[color[n] for n in names], label="index file, memory-mapped (shared)")
    mem.barh(names, arrow, left=file_, color=[color[n] for n in names], alpha=0.55, hatch="//",
             label="Arrow passages, memory-mapped (shared)")
    mem.barh(names, rest, left=file_ + arrow, color=[color[n] for n in names], alpha=0.3,
             label="private memory (index copies, buffers)")
    mem.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    copies = int(max(vals + [one]) // one) if one > 0 else 0
    if 0 < copies <= MAX_COPY_LINES:
        for k in range(1, copies + 1):
            mem.axvline(k * one, color="black" if k == 1 else "silver", linestyle="--", linewidth=1, zorder=0)
            mem.annotate(f"{k}×", (k * one, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                         fontsize=7)
    for bar, v, r in zip(bars, vals, mrows):
        mem.annotate(f"{v:,.0f} MiB, {r['retrieval_processes']} proc.", (max(v, 0), bar.get_y() + bar.get_height() / 2),
                     va="center", fontsize=8, xytext=(3, 0), textcoords="offset points")
    mem.invert_yaxis()
    mem.set_xlabel(f"MiB of PSS the index holders grew by ({one:,.0f} MiB index file = 1×)")
    mem.set_title(f"Index memory at {w_mem} workers", pad=14)
    mem.margins(x=0.45)
