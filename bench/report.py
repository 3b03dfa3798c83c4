#!/usr/bin/env python3
"""Tables, JSON and chart data from bench/loadgen's JSON lines (see bench/run.sh).

  report.py LINES MODE [OUT.json]    print the tables; write OUT.json; MODE smoke checks
                                     (MODE tls: a markdown table, and its medians in OUT.json)
  report.py --chart-data OUT.json    median PSS/client and time to the last client per server, N
"""
import json
import os
import platform
import statistics
import subprocess
import sys


def version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception:
        return None


def machine():
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "versions": {
            "sse-gateway": version(["git", "describe", "--always", "--dirty"]),
            "nginx": version(["nginx", "-v"]),
            "nchan": version(["dpkg-query", "-W", "libnginx-mod-nchan"]),
            "pushpin": version(["dpkg-query", "-W", "pushpin"]),
            "node": version(["node", "--version"]),
            "openssl": version(["openssl", "version"]),
        },
    }


def med(rows, f):
    return statistics.median(f(r) for r in rows)


def spread(rows, f):
    return max(f(r) for r in rows) - min(f(r) for r in rows)


def groups(rows, run):
    out = {}
    for r in rows:
        if r.get("run") == run:
            out.setdefault((r["server"], r["clients"]), []).append(r)
    return out


def fanout_table(rows):
    g = groups(rows, "fanout")
    if not g:
        return
    print("Fan-out: N clients on one stream, 5 changes of 1 KB; medians, ± the spread over runs")
    print(f'{"server":19} {"N":>6} {"runs":>4} {"PSS KB/client":>14} {"p50 ms":>7} {"p99 ms":>7} '
          f'{"last ms":>12} {"CPU ms/chg":>10} {"loadgen":>7} {"other":>6} {"drop":>4} {"miss":>4} {"upstr":>5}')
    for (server, n), rs in sorted(groups(rows, "fanout").items(), key=lambda k: (k[0][1], k[0][0])):
        print(f'{server:19} {n:>6} {len(rs):>4} '
              f'{med(rs, lambda r: r["pss_kb_per_client"]):>8.1f} ±{spread(rs, lambda r: r["pss_kb_per_client"]):<4.1f}'
              f' {med(rs, lambda r: r["latency_ms"]["p50"]):>7.0f} {med(rs, lambda r: r["latency_ms"]["p99"]):>7.0f}'
              f' {med(rs, lambda r: r["last_client_ms_median"]):>6.0f} ±{spread(rs, lambda r: r["last_client_ms_median"]):<4.0f}'
              f' {med(rs, lambda r: r["server_cpu_ms_per_change"]):>10.0f}'
              f' {med(rs, lambda r: r["loadgen_cpu_ms_per_change"]):>7.0f}'
              f' {med(rs, lambda r: r.get("host_other_cpu_ms_per_change", 0)):>6.0f}'
              f' {max(r["dropped"] for r in rs):>4} {max(r["events_missing"] for r in rs):>4}'
              f' {med(rs, lambda r: r["upstream_requests"]):>5.0f}')
    print("  CPU, loadgen, other: ms of CPU per change of the server (whole process tree), the load")
    print("  generator, and everything else on the host; upstr: upstream requests for the 5 changes.")


def cost_table(rows):
    runs = [r for r in rows if r.get("run", "").startswith("cost-")]
    if not runs:
        return
    print()
    print("Upstream cost: N clients on one stream polled every second, 10 s")
    print(f'{"N":>6} {"changes":>8} {"req/s":>6} {"304/s":>6} {"upstream B/s":>13} {"self-polling B/s":>17} {"factor":>8}')
    for r in sorted(runs, key=lambda r: (r["clients"], r["change_ratio"])):
        selfp = r["self_polling_bytes_per_s"]
        up = r["upstream_bytes_per_s"]
        print(f'{r["clients"]:>6} {"every poll" if r["change_ratio"] else "none":>8} {r["upstream_requests_per_s"]:>6.2f}'
              f' {r["upstream_not_modified_per_s"]:>6.2f} {up:>13.0f} {selfp:>17.0f} {selfp / up if up else 0:>8.0f}')
    print("  self-polling: the same clients each fetching the whole document once per interval.")


def streamdata_table(rows):
    rs = [r for r in rows if r.get("run") == "streamdata"]
    if not rs:
        return
    print()
    print("Streamdata scenario: 3,000 clients, 100 streams, 50 KB documents, 20% changed per poll,")
    print("500 ms interval; latency from the upstream serving a version to each client (Axway: p99 21, max 250)")
    print(f'{"runs":>4} {"p50 ms":>7} {"p99 ms":>7} {"max ms":>7} {"events/s":>9} {"server CPU":>10} {"loadgen CPU":>11} {"other":>6} {"dropped":>7}')
    print(f'{len(rs):>4} {med(rs, lambda r: r["latency_ms"]["p50"]):>7.1f} {med(rs, lambda r: r["latency_ms"]["p99"]):>7.1f}'
          f' {med(rs, lambda r: r["latency_ms"]["max"]):>7.1f} {med(rs, lambda r: r["events_per_s"]):>9.0f}'
          f' {med(rs, lambda r: r["server_cpu_pct"]):>9.0f}% {med(rs, lambda r: r["loadgen_cpu_pct"]):>10.0f}%'
          f' {med(rs, lambda r: r.get("host_other_cpu_pct", 0)):>5.0f}% {max(r["dropped"] for r in rs):>7}')
    print(f'  p99 per run: {", ".join(str(round(r["latency_ms"]["p99"], 1)) for r in rs)} ms;'
          f' max per run: {", ".join(str(round(r["latency_ms"]["max"], 1)) for r in rs)} ms')
    if all("first_client_ms" in r for r in rs):
        print(f'  first client of each change (no fan-out): p50 {med(rs, lambda r: r["first_client_ms"]["p50"]):.1f},'
              f' p99 {med(rs, lambda r: r["first_client_ms"]["p99"]):.1f} ms')


TRANSPORTS = ["h1", "tls", "h2", "h2mux"]


def tls_summary(rows):
    """Medians per server, transport and N of the --tls runs, with the handshake rates."""
    fan = {}
    for r in rows:
        if r.get("run") == "tls":
            fan.setdefault((r["server"], r.get("transport", "h1"), r["clients"]), []).append(r)
    hs = {}
    for r in rows:
        if r.get("run") == "handshakes":
            hs.setdefault((r["server"], r["transport"]), []).append(r)
    out = []
    for (server, transport, n), rs in fan.items():
        h = hs.get((server, transport), [])
        out.append({
            "server": server, "transport": transport, "clients": n, "runs": len(rs),
            "pss_kb_per_client": med(rs, lambda r: r["pss_kb_per_client"]),
            "last_client_ms": med(rs, lambda r: r["last_client_ms_median"]),
            "last_client_ms_spread": spread(rs, lambda r: r["last_client_ms_median"]),
            "server_cpu_ms_per_change": med(rs, lambda r: r["server_cpu_ms_per_change"]),
            "loadgen_cpu_ms_per_change": med(rs, lambda r: r["loadgen_cpu_ms_per_change"]),
            "dropped": max(r["dropped"] for r in rs),
            "events_missing": max(r["events_missing"] for r in rs),
            "handshakes_per_s": med(h, lambda r: r["handshakes_per_s"]) if h else None,
        })
    out.sort(key=lambda s: (s["clients"], s["server"] != "gateway", s["server"], TRANSPORTS.index(s["transport"])))
    hs_out = [{
        "server": server, "transport": transport, "runs": len(h),
        "handshakes_per_s": med(h, lambda r: r["handshakes_per_s"]),
        "server_cpu_ms_per_handshake": med(h, lambda r: r["server_cpu_ms_per_handshake"]),
        "loadgen_cpu_ms_per_handshake": med(h, lambda r: r["loadgen_cpu_ms_per_handshake"]),
        "failed": max(r["failed"] for r in h),
    } for (server, transport), h in sorted(hs.items())]
    return out, hs_out


def tls_table(rows):
    fan, hs = tls_summary(rows)
    if not fan and not hs:
        return None
    # The targets are against the gateway's own plain HTTP/1.1 at the same N.
    ref = {s["clients"]: s for s in fan if s["server"] == "gateway" and s["transport"] == "h1"}

    def cell(s, key, fmt, spread=None):
        text = fmt.format(s[key]) + (f' ±{s[spread]:.0f}' if spread else "")
        base = ref.get(s["clients"])
        if s["server"] == "gateway" and s["transport"] != "h1" and base and base[key] > 0:
            text += f' ({s[key] / base[key]:.1f}×)'
        return text

    print()
    print("TLS and HTTP/2: N clients on one stream, 5 changes of 1 KB; medians of the runs "
          "(× the gateway's plain h1 at the same N)")
    print()
    print("| server | transport | N | KB per idle client | ms to last client | CPU ms per change "
          "| handshakes/s | dropped / missing |")
    print("|---|---|---|---|---|---|---|---|")
    for s in fan:
        hs_cell = f'{s["handshakes_per_s"]:,.0f}' if s["handshakes_per_s"] else "—"
        print(f'| {s["server"]} | {s["transport"]} | {s["clients"]:,} | {cell(s, "pss_kb_per_client", "{:.1f}")}'
              f' | {cell(s, "last_client_ms", "{:.0f}", "last_client_ms_spread")}'
              f' | {cell(s, "server_cpu_ms_per_change", "{:.0f}")} | {hs_cell}'
              f' | {s["dropped"]} / {s["events_missing"]} |')
    if hs:
        print()
        print("| server | transport | handshakes/s | server CPU ms per handshake "
              "| load generator CPU ms per handshake | failed |")
        print("|---|---|---|---|---|---|")
        for h in hs:
            print(f'| {h["server"]} | {h["transport"]} | {h["handshakes_per_s"]:,.0f}'
                  f' | {h["server_cpu_ms_per_handshake"]:.2f} | {h["loadgen_cpu_ms_per_handshake"]:.2f}'
                  f' | {h["failed"]} |')
        print("  handshakes: fresh connections, 8 at a time, each closed after its TLS handshake and the")
        print("  subscription's response head (h2mux opens its connections as h2 does).")
    return {"fanout": fan, "handshakes": hs}


def smoke(rows):
    bad = []
    for r in rows:
        if r["connected"] != r["clients"]:
            bad.append(f'{r["connected"]} of {r["clients"]} clients connected')
        if r["dropped"] or r["events_missing"]:
            bad.append(f'{r["dropped"]} dropped, {r["events_missing"]} events missing')
        if r["upstream_requests"] != 5:
            bad.append(f'{r["upstream_requests"]} upstream requests for 5 changes')
    if not rows:
        bad.append("no results")
    for b in bad:
        print(f"smoke: {b}", file=sys.stderr)
    return not bad


def chart_data(path):
    rows = json.load(open(path))["runs"]
    by_server = {}
    for (server, n), rs in groups(rows, "fanout").items():
        by_server.setdefault(server, []).append(
            (n, med(rs, lambda r: r["pss_kb_per_client"]), med(rs, lambda r: r["last_client_ms_median"])))
    for server, pts in sorted(by_server.items()):
        print(f'"{server}" "PSS" "last"')
        for n, pss, last in sorted(pts):
            print(n, round(pss, 2), round(last, 1))
        print("\n")


TRANSPORT_LABELS = {"h1": "plain HTTP/1.1", "tls": "TLS, HTTP/1.1", "h2": "HTTP/2",
                    "h2mux": "HTTP/2, 100 per conn"}


def tls_chart_data(path):
    """For bench/chart_tls.gp: one row per transport at the largest N, gateway then nchan."""
    fan, _ = tls_summary(json.load(open(path))["runs"])
    n = max(s["clients"] for s in fan)
    cells = {(s["server"], s["transport"]): s for s in fan if s["clients"] == n}
    print(f'# N = {n}: transport, PSS per idle client (gateway, nchan), ms to the last client '
          '(gateway, nchan), server CPU ms per change (gateway, nchan)')
    for t in TRANSPORTS:
        g, x = cells.get(("gateway", t)), cells.get(("nchan", t))
        if not g or not x:
            continue
        print(f'"{TRANSPORT_LABELS[t]}"', *(round(v, 1) for v in (
            g["pss_kb_per_client"], x["pss_kb_per_client"], g["last_client_ms"],
            x["last_client_ms"], g["server_cpu_ms_per_change"], x["server_cpu_ms_per_change"])))


def main():
    if sys.argv[1] == "--chart-data":
        chart_data(sys.argv[2])
        return 0
    if sys.argv[1] == "--tls-chart-data":
        tls_chart_data(sys.argv[2])
        return 0
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    mode = sys.argv[2]
    fanout_table(rows)
    cost_table(rows)
    streamdata_table(rows)
    summary = tls_table(rows)
    if len(sys.argv) > 3:
        os.makedirs(os.path.dirname(sys.argv[3]), exist_ok=True)
        out = {"mode": mode, "machine": machine(), "runs": rows}
        if mode == "tls" and summary:
            out["summary"] = summary
        json.dump(out, open(sys.argv[3], "w"), indent=1)
        print(f"\nresults: {sys.argv[3]}")
    if mode == "smoke":
        return 0 if smoke(rows) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
