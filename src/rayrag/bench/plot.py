"""results.png: the critical path per step (median over rounds, min-max bars) grouped by workers and backend, with
the floor and the bound of each worker count, and the index memory of each backend at the largest worker count."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

LOG_SCALE_RATIO = 4.0
"""The latency axis turns logarithmic when the slowest bar exceeds this many times the median bar."""
MAX_COPY_LINES = 8
"""Index copies marked with a dashed line in the memory panel (beyond that the lines would be noise)."""


def plot(path: Path, rows: list[dict], floors: dict[int, dict], title: str) -> None:
    """Write the two-panel figure for `rows` (see report.COLUMNS) and `floors` (by worker count) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(r["backend"] for r in rows))
    color = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    fig, (ax, mem) = plt.subplots(1, 2, figsize=(15, 6.8), gridspec_kw={"width_ratios": [2.2, 1]})
    _latency_panel(ax, rows, floors, backends, color)
    _memory_panel(mem, rows, floors[max(floors)]["index_bytes"], backends, color)
    fig.suptitle("\n".join(textwrap.wrap(title.replace("\n", " | "), 170)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_panel(ax, rows: list[dict], floors: dict[int, dict], backends: list[str], color: dict) -> None:
    """Grouped bars of the critical path (median over rounds, min-max as error bars) by workers and backend;
    each worker count's floor (solid, or dashed red when a row beat it) and bound (dotted) across its group."""
    workers = sorted({r["workers"] for r in rows})
    cell = {(r["backend"], r["workers"]): r for r in rows}
    width = 0.8 / len(backends)
    x = np.arange(len(workers))
    for i, b in enumerate(backends):
        got = [cell.get((b, w)) for w in workers]
        ys = np.array([r["critical_mean_s"] if r else np.nan for r in got])
        lo = np.array([r["critical_mean_s"] - r["critical_mean_s_min"] if r else 0.0 for r in got])
        hi = np.array([r["critical_mean_s_max"] - r["critical_mean_s"] if r else 0.0 for r in got])
        bars = ax.bar(x + (i - (len(backends) - 1) / 2) * width, ys, width, label=b, color=color[b],
                      yerr=np.vstack([lo, hi]), error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.25"})
        for bar, y, h in zip(bars, ys, hi):
            if np.isfinite(y):
                ax.annotate(f"{y:.3g}", (bar.get_x() + bar.get_width() / 2, y + h), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
    seconds = [r["critical_mean_s"] for r in rows]
    lows = [r["critical_mean_s_min"] for r in rows]
    labels = {"floor": "floor: the step's W×B queries in one process (red dashed: invalid, a row beat it)",
              "bound": "bound: max(GEMM at the machine's rate, one read of the index)"}
    for j, w in enumerate(workers):
        f = floors.get(w)
        if f is None:
            continue
        left, right = x[j] - 0.45, x[j] + 0.45
        valid = f.get("valid", True)
        ax.hlines(f["search_s"], left, right, colors="black" if valid else "red", linestyles="-" if valid else "--",
                  linewidth=1.3, label=labels.pop("floor", None))
        seconds.append(f["search_s"])
        if f.get("bound_s") is not None:
            ax.hlines(f["bound_s"], left, right, colors="grey", linestyles=":", linewidth=1.3,
                      label=labels.pop("bound", None))
            lows.append(f["bound_s"])
    ax.set_xticks(x, [f"{w} worker{'s' * (w > 1)}" for w in workers])
    top = max(r["critical_mean_s_max"] for r in rows)
    if max(seconds) > LOG_SCALE_RATIO * float(np.median(seconds)):  # one slow backend would flatten the rest
        ax.set_yscale("log")
        ax.set_ylim(min(seconds + lows) * 0.7, max(top, max(seconds)) * 6)
        ax.set_ylabel("critical path: seconds per step, max over ranks (mean over steps, log scale)")
    else:
        ax.set_ylim(0, max(top, max(seconds)) * 1.45)
        ax.set_ylabel("critical path: seconds per step, max over ranks (mean over steps)")
    ax.set_title("Retrieval critical path per step (lower is better; median over rounds, bars: min–max)")
    ax.legend(fontsize=8, loc="upper left", ncol=2)


def _memory_panel(mem, rows: list[dict], index_bytes: int, backends: list[str], color: dict) -> None:
    """Horizontal bars of the index holders' memory growth (median over rounds) at the largest worker count,
    split by what it is."""
    w_mem = max(r["workers"] for r in rows)
    cell = {(r["backend"], r["workers"]): r for r in rows}
    mrows = [cell[(b, w_mem)] for b in backends if (b, w_mem) in cell]
    one = index_bytes / 2**20
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
