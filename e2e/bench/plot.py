"""Plots a bench directory's capacity.json and latency.json (both written by
e2e/benches/bridge_throughput) as bridges.png in the same directory.

    .bin/plot-venv/bin/python e2e/bench/plot.py <dir>

Left: capacity (a backlog drained alone) per pair for oms-bridge and the peer replicator, median
with the range over the repeats; per pair the first workload and peer run on it (the latency
runs' workload, MirrorMaker 2 on defaults), the others are in capacity.md. Right: the end-to-end p99 that each adds to the target broker
alone's at the same fixed rate, median with range. A route through the mTLS gateway
('kafka -> gateway -> nats') is a pair of its own. `make bench-latency` runs this after the bench,
with matplotlib from tools.sh plot; a directory without latency.json gets the capacity half only.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display: write the file only
import matplotlib.pyplot as plt  # noqa: E402

OURS = "oms-bridge"
COLORS = {OURS: "#1f77b4", "peer": "#ff7f0e"}


def load(directory, name):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def bars(ax, rows, key, ylabel, title):
    """One group per pair: ours and the peer, each a median bar with a min-max whisker."""
    pairs = []
    for row in rows:
        if row["replicator"] != "raw target (ceiling)" and row["driver"] not in pairs:
            pairs.append(row["driver"])
    width = 0.38
    for i, who in enumerate((OURS, "peer")):
        xs, heights, low, high, names = [], [], [], [], []
        for p, pair in enumerate(pairs):
            row = next((r for r in rows if r["driver"] == pair and (r["replicator"] == OURS) == (who == OURS)), None)
            spread = row.get(key) if row else None
            if not spread:
                continue
            xs.append(p + (i - 0.5) * width)
            heights.append(spread["median"])
            low.append(spread["median"] - spread["min"])
            high.append(spread["max"] - spread["median"])
            names.append(row["replicator"])
        ax.bar(xs, heights, width, yerr=[low, high], capsize=3, color=COLORS[who], label=OURS if who == OURS else "peer")
        if who == "peer":
            for x, h, name in zip(xs, heights, names):
                ax.annotate(name, (x, h), ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(pairs)))
    ax.set_xticklabels(pairs, fontsize=8, rotation=15)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def main(directory):
    capacity = load(directory, "capacity.json")
    latency = load(directory, "latency.json")
    if capacity is None:
        sys.exit(f"{directory}/capacity.json: not there; run make bench-capacity first")
    fig, axes = plt.subplots(1, 2 if latency else 1, figsize=(15 if latency else 8, 6), squeeze=False)
    bars(axes[0][0], capacity["summary"]["runs"], "capacity", "messages/s (backlog drained alone)",
         f"Capacity, higher is better (commit {capacity['commit'][:10]})")
    if latency:
        bars(axes[0][1], latency["summary"]["runs"], "addedp99Ms", "ms added to the target alone's p99 (symlog)",
             f"Added p99 at a fixed rate, lower is better (commit {latency['commit'][:10]})")
        # From under a millisecond to seconds: symmetric log (an in-broker peer can add slightly < 0).
        axes[0][1].set_yscale("symlog", linthresh=1)
    machine = capacity["machine"]
    fig.suptitle(
        f"Bridges side by side: median and range over {capacity['repeats']} repeats\n{machine['cpus']} cores "
        f"({machine['cpuModel']}), {machine['memoryGiB']:.0f} GiB; workloads in e2e/bench/workloads",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "bridges.png"), dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
