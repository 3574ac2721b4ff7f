"""Plots docs/bench/bridge-throughput.json (written by e2e/benches/bridge_throughput) as a PNG.

    .bin/plot-venv/bin/python e2e/bench/plot.py <results.json> <out.png>

Left: the consume rate at the target per pair, for the target broker alone (the ceiling),
oms-bridge and the peer replicator of that pair. Right: the end-to-end p99 latency of the same
runs (log scale). A route through the mTLS gateway ('kafka -> gateway -> nats') is a pair of its
own, labelled with its ratios to the direct route (the price of crossing a cloud boundary).
`make bench` runs this after the bench, with matplotlib from tools.sh plot.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display: write the file only
import matplotlib.pyplot as plt  # noqa: E402

RAW = "raw target (ceiling)"
OURS = "oms-bridge"


def target_of(pair):
    """'kafka -> nats' and 'nats alone' both name the target broker last or first."""
    return pair.split(" -> ")[-1].split(" ")[0]


def main(results_path, out_path):
    with open(results_path, encoding="utf-8") as f:
        doc = json.load(f)
    runs = doc["runs"]
    ceilings = {target_of(r["driver"]): r for r in runs if r["replicator"] == RAW}
    pairs = [r["driver"] for r in runs if r["replicator"] == OURS]

    series = {"target alone (ceiling)": [], "oms-bridge": [], "peer": []}
    peers = []
    for pair in pairs:
        ours = next(r for r in runs if r["driver"] == pair and r["replicator"] == OURS)
        peer = next((r for r in runs if r["driver"] == pair and r["replicator"] not in (OURS, RAW)), None)
        series["target alone (ceiling)"].append(ceilings.get(target_of(pair)))
        series["oms-bridge"].append(ours)
        series["peer"].append(peer)
        peers.append(peer["replicator"] if peer else "no peer")

    fig, (rates, latency) = plt.subplots(1, 2, figsize=(14, 6))
    width = 0.27
    colors = {"target alone (ceiling)": "#b0b0b0", "oms-bridge": "#1f77b4", "peer": "#ff7f0e"}
    for i, (name, values) in enumerate(series.items()):
        xs = [p + (i - 1) * width for p in range(len(pairs))]
        rate = [v["consumeRateAvg"] if v else 0 for v in values]
        p99 = [v["aggregatedEndToEndLatency99pct"] if v and v["aggregatedEndToEndLatency99pct"] else 0 for v in values]
        rates.bar(xs, rate, width, label=name, color=colors[name])
        latency.bar(xs, p99, width, label=name, color=colors[name])

    # The ratios the table states, above each pair (with headroom for their three lines).
    rates.set_ylim(top=rates.get_ylim()[1] * 1.2)
    crossings = {c["driver"]: c for c in doc.get("crossingCloudBoundary", [])}
    for p, c in enumerate(doc["comparisons"]):
        text = [f"{name} {c[key]:.2f}" for name, key in (("ours/peer", "oursPerPeer"), ("ours/ceiling", "oursPerCeiling"))
                if c.get(key) is not None]
        crossing = crossings.get(c["driver"])
        if crossing and crossing.get("consumeRateGatewayPerDirect") is not None:
            text.append(f"gateway/direct {crossing['consumeRateGatewayPerDirect']:.2f}")
        if crossing and crossing.get("endToEndP99GatewayPerDirect") is not None:
            latency.annotate(f"gateway/direct\n{crossing['endToEndP99GatewayPerDirect']:.2f}",
                             (p, crossing["gatewayEndToEndP99"]), ha="center", va="bottom", fontsize=8)
        top = max(c["oursConsumeRate"] or 0, c["peerConsumeRate"] or 0, c["ceilingConsumeRate"] or 0)
        rates.annotate("\n".join(text), (p, top), ha="center", va="bottom", fontsize=8)

    labels = [f"{pair}\npeer:\n{peer}" for pair, peer in zip(pairs, peers)]
    for ax in (rates, latency):
        ax.set_xticks(range(len(pairs)))
        ax.set_xticklabels(labels, fontsize=8)
    rates.set_ylabel("messages/s consumed at the target")
    rates.set_title("Throughput (higher is better)")
    rates.legend(fontsize=8)
    latency.set_yscale("log")
    latency.set_ylim(top=latency.get_ylim()[1] * 2)  # room for the gateway/direct label
    latency.set_ylabel("end-to-end p99 latency, ms (log)")
    latency.set_title("End-to-end p99 latency (lower is better)")

    machine = doc["machine"]
    fig.suptitle(
        f"Bridge throughput side by side, {machine['cpus']} cores ({machine['cpuModel']}), "
        f"{machine['memoryGiB']:.0f} GiB; workloads in e2e/bench/workloads",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
