#!/usr/bin/env python3
"""The table and JSON of bench/cluster.sh from sse-cluster's two reports.

  cluster_report.py SINGLE.json CLUSTER.json OUT.json COMMAND CLUSTER(1|0)

SINGLE is one gateway alone with one gateway's share of the clients (the PSS to compare with);
CLUSTER is the run with every gateway. Redis's commands and CPU per change are given net of its
background (lease renewals), which the idle window measures per second.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import machine, version  # noqa: E402


def read(path):
    with open(path) as f:
        return json.load(f)


def checked():
    """What bounds 100,000 loopback connections here, as read at the run."""
    def text(path):
        try:
            with open(path) as f:
                return f.read().split()
        except OSError:
            return None
    limits = subprocess.run(["bash", "-c", "ulimit -n; ulimit -Hn"], capture_output=True, text=True)
    soft, hard = (limits.stdout.split() + [None, None])[:2]
    return {
        "ulimit_n": soft,
        "ulimit_hn": hard,
        "ip_local_port_range": text("/proc/sys/net/ipv4/ip_local_port_range"),
        "somaxconn": text("/proc/sys/net/core/somaxconn"),
        "file_max": text("/proc/sys/fs/file-max"),
        "nf_conntrack_max": text("/proc/sys/net/netfilter/nf_conntrack_max"),
        "nf_conntrack_count": text("/proc/sys/net/netfilter/nf_conntrack_count"),
    }


def net_redis(c):
    """Redis per change (in a window from just before it until every client had it), minus what
    it does per second anyway (the idle window) times the window."""
    ch = c.get("changes", {})
    per_change, per_s = ch.get("redis_per_change"), c.get("idle", {}).get("redis_per_s")
    if not per_change or not per_s:
        return None
    secs = ch["redis_window_s_per_change"]
    by = {k: round(v - per_s["by_command"].get(k, 0) * secs, 1)
          for k, v in per_change["by_command"].items()}
    return {
        "window_s": secs,
        "commands": round(per_change["commands"] - per_s["commands"] * secs, 1),
        "by_command": {k: v for k, v in by.items() if abs(v) >= 0.1},
        "raw_commands": per_change["commands"],
        "on_cpu_ms": round(per_change["on_cpu_ms"] - per_s["on_cpu_ms"] * secs, 2),
        "raw_on_cpu_ms": per_change["on_cpu_ms"],
        "idle_commands_per_s": per_s["commands"],
        "idle_by_command_per_s": per_s["by_command"],
        "idle_cpu_pct": per_s["cpu_ms"] / 10.0,
    }


def summary(single, c):
    base = single["per_gateway"][0]["pss_kb_per_client"]
    pss = [g["pss_kb_per_client"] for g in c["per_gateway"]]
    return {
        "single_pss_kb_per_client": base,
        "pss_kb_per_client": pss,
        "pss_worst_vs_single_pct": round(100 * (max(pss) / base - 1), 1) if base else None,
        "redis_net_per_change": net_redis(c),
    }


def row(name, value):
    print(f"  {name:44} {value}")


def lat(x):
    return f'{x["p50_ms"]:.0f} / {x["p99_ms"]:.0f} / {x["max_ms"]:.0f} ms ({x["clients"]:,} clients)'


def num(x, fmt=".2f"):
    return "-" if x is None else format(x, fmt)


def table(single, c, s):
    print(f'Cluster: {c["gateways"]} gateways, {c["clients"]:,} clients from {c["agents"]} processes')
    row("connected / dropped, attach", f'{c["connected"]:,} / {c["dropped"]:,}, {c["attach_s"]:.1f} s')
    idle = c.get("idle")
    if idle:
        by = ", ".join(f"{k} {v}" for k, v in idle["upstream"]["by_node"].items())
        row(f'upstream requests per {idle["interval_s"]:g} s interval (idle)',
            f'{num(idle["upstream_requests_per_interval"])}  ({idle["upstream"]["requests"]} in '
            f'{idle["seconds"]:.0f} s: {by})')
        roles = ", ".join(f'{n["node"]} {n["role"] or "-"}' for n in idle["nodes"])
        row("roles in /streams", roles)
    ch = c.get("changes")
    if ch:
        row("one 1 KB change, p50 / p99 / max", lat(ch["latency"]))
        row("  last client, median of changes", f'{ch["last_client_ms_median"]:.0f} ms')
        for i, e in enumerate(ch["each"], 1):
            row(f"  change {i}", lat(e))
        row("CPU per change: gateways / load gen / other",
            f'{ch["gateways_cpu_ms_per_change"]:.0f} / {ch["loadgen_cpu_ms_per_change"]:.0f} / '
            f'{ch["host_other_cpu_ms_per_change"]:.0f} ms (softirq {ch["host_softirq_ms_per_change"]:.0f})')
    pss = ", ".join(f'{g["node"]} {g["pss_kb_per_client"]:.2f}' for g in c["per_gateway"])
    row("PSS per client (KB)", pss)
    worst = s["pss_worst_vs_single_pct"]
    row("  one gateway alone (same share of clients)",
        f'{s["single_pss_kb_per_client"]:.2f} KB; worst gateway {worst:+.1f}%' if worst is not None else "-")
    r = s["redis_net_per_change"]
    if r:
        by = ", ".join(f"{k} {v:g}" for k, v in r["by_command"].items())
        row("Redis per change (net of background)",
            f'{r["commands"]:g} commands ({by}), {r["on_cpu_ms"]:.2f} ms CPU')
        row("  raw, in a window of", f'{r["raw_commands"]:g} commands, {r["raw_on_cpu_ms"]:.2f} ms CPU, {r["window_s"] * 1000:.0f} ms')
        row("Redis background (idle)", f'{r["idle_commands_per_s"]:.1f} commands/s, {r["idle_cpu_pct"]:.2f}% CPU')
    t = c.get("takeover")
    if t and "skipped" in t:
        row("holder killed", t["skipped"])
    elif t:
        row(f'holder {t["killed"]} SIGKILLed: new holder',
            f'{t["new_holder"]} after {num(t["holder_after_ms"], ".0f")} ms')
        row("  change made at the kill, reached all",
            f'{num(t["change_reached_all_ms"], ".0f")} ms; ' + lat(t["change_at_kill"]))
        row("  upstream requests meanwhile", f'{t["upstream_during"]["requests"]} {t["upstream_during"]["by_node"]}')
        row("  next change (refreshed)", lat(t["next_change"]))
        row("  upstream requests per interval after", f'{num(t["upstream_requests_per_interval_after"])} {t["upstream_after"]["by_node"]}')


def main():
    single, c = read(sys.argv[1]), read(sys.argv[2])
    out, command, cluster = sys.argv[3], sys.argv[4], sys.argv[5] == "1"
    for name, r in (("single", single), ("cluster", c)):
        if "error" in r:
            sys.exit(f"bench: the {name} run failed: {r['error']}")
    s = summary(single, c)
    table(single, c, s)
    m = machine()
    m["versions"] = {"sse-gateway": version(["git", "describe", "--always", "--dirty"]),
                     "redis-server": version(["redis-server", "--version"])}
    doc = {"command": command, "cluster": cluster, "machine": m, "checked": checked(),
           "summary": s, "single": single, "run": c}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"json: {out}")


if __name__ == "__main__":
    main()
