"""The drill's picture: order-entry throughput, each market's mode, and the faults, over time."""

from __future__ import annotations

from pathlib import Path

from bastion.drills.report import Report

MODE_LEVEL = {"open": 5, "post_only": 4, "recovery": 3, "cancel_only": 2, "halted": 1,
              "closed": 0}


def plot(report: Report, path: Path) -> Path:
    """Write a PNG (matplotlib, headless backend) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report.series
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    t = series.get("t", [])
    width = series.get("bucket_s", 0.5)
    ax1.bar(t, series.get("accepted_per_s", []), width=width, align="edge", color="tab:green",
            label="orders accepted/s")
    ax1.bar(t, series.get("refused_per_s", []), width=width, align="edge", color="tab:orange",
            bottom=series.get("accepted_per_s", []), label="refused/s")
    ax1.set_ylabel("order entry (/s)")
    end = t[-1] + width if t else 0
    for i, (name, points) in enumerate(sorted(series.get("modes", {}).items())):
        xs = [p[0] for p in points] + [end]
        ys = [MODE_LEVEL.get(p[1], -1) + 0.07 * i for p in points]
        ax2.step(xs, [*ys, ys[-1]], where="post", label=name)
    ax2.set_yticks(list(MODE_LEVEL.values()), list(MODE_LEVEL))
    ax2.set_ylim(-0.5, 5.5)
    ax2.set_xlabel("seconds since traffic started")
    ax2.set_ylabel("market mode")
    for mark in report.timeline:
        if mark.kind in ("fault", "response"):
            color = "tab:red" if mark.kind == "fault" else "tab:blue"
            for ax in (ax1, ax2):
                ax.axvline(mark.t, color=color, linestyle="--", linewidth=1)
            ax1.annotate(mark.text[:28], (mark.t, 1), xycoords=("data", "axes fraction"),
                         rotation=90, va="top", ha="right", fontsize=7, color=color)
    ax1.legend(loc="upper left", fontsize=8)
    if series.get("modes"):
        ax2.legend(loc="lower left", fontsize=8)
    result = "PASS" if report.passed else "FAIL"
    fig.suptitle(f"{report.drill} ({'guards on' if report.guards else 'guards OFF'}): {result}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
