"""Shared helpers for benchmarks: percentiles, USS, tables, JSON and charts."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def p50(values: list[float]) -> float:
    return statistics.median(values)


def uss_bytes(pid: int) -> int:
    """Unique set size: memory only this process holds (private pages)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


def print_table(title: str, rows: list[dict], peer: str = "jupyter") -> None:
    """rows: {metric, ours, peer, unit, better} -> a table with peer/ours ratios."""
    print(f"\n{title}")
    print(f"{'metric':<44} {'salvus':>12} {peer:>12} {'ratio':>8}  unit")
    for row in rows:
        ratio = row["peer"] / row["ours"] if row["ours"] else float("inf")
        if row.get("better") == "higher":
            ratio = 1 / ratio if ratio else float("inf")
        print(f"{row['metric']:<44} {row['ours']:>12.3f} {row['peer']:>12.3f} "
              f"{ratio:>7.1f}x  {row['unit']}")
    print(f"ratio: how many times better Salvus is than {peer} on that row (below 1: worse)")


def save(name: str, rows: list[dict]) -> tuple[Path, Path]:
    RESULTS.mkdir(exist_ok=True)
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    png_path = RESULTS / f"{name}.png"
    chart(name, rows, png_path)
    return json_path, png_path


def chart(name: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.1 * len(rows) + 0.8))
    for ax, row in zip(axes if len(rows) > 1 else [axes], rows, strict=True):
        ax.barh(["jupyter", "salvus"], [row["peer"], row["ours"]],
                color=["#b0b7c3", "#1d3557"])
        ax.set_title(f"{row['metric']} ({row['unit']})", fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
        for i, value in enumerate([row["peer"], row["ours"]]):
            ax.text(value, i, f" {value:.3g}", va="center", fontsize=8)
        ax.set_xlim(0, max(row["peer"], row["ours"]) * 1.25 or 1)
    fig.suptitle(f"Salvus vs Jupyter: {name} (lower is better)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
