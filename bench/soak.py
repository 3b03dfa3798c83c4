#!/usr/bin/env python3
"""Soak: connect, wait for the first event, disconnect, many times over; the gateway must end
where it started. Run by bench/soak.sh, which builds the release binary first.

Half the clients leave with FIN (close), half with RST (SO_LINGER 0), at most `--concurrency`
at a time, over 8 loopback source addresses (a FIN leaves the port in TIME_WAIT on our side).
The gateway's PSS (RSS where smaps_rollup is missing) and open files are read after a warm-up
and again once it has settled (jemalloc returns freed pages about a second after a burst);
exit 1 unless neither grew more than `--tolerance` over the first reading, the gateway counts no
client attached, and no cycle failed.

Stdlib only: the upstream is a static document served from a thread here.
"""

import argparse
import asyncio
import http.server
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

DOC = json.dumps({"soak": True, "pad": "x" * 1000}).encode()
REQUEST = b"GET /sse/doc HTTP/1.1\r\nHost: soak\r\nAccept: text/event-stream\r\n\r\n"


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.headers.get("If-None-Match") == '"1"':
            self.send_response(304)
            self.send_header("ETag", '"1"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", '"1"')
        self.send_header("Content-Length", str(len(DOC)))
        self.end_headers()
        self.wfile.write(DOC)

    def log_message(self, *args):
        pass


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def memory_kb(pid):
    """(PSS, RSS) in KB; PSS is RSS where smaps_rollup is missing."""
    def field(path, name):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(name):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    rss = field(f"/proc/{pid}/status", "VmRSS:") or 0
    pss = field(f"/proc/{pid}/smaps_rollup", "Pss:")
    return (pss if pss is not None else rss), rss


def metric(admin_port, name):
    """A sample's value from the admin listener's /metrics, summed over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    ]
    return sum(values) if values else None


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    def __init__(self, port, concurrency, timeout):
        self.port = port
        self.concurrency = concurrency
        self.timeout = timeout
        self.errors = {}
        self.done = 0

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def cycle(self, i):
        src = f"127.0.0.{1 + i % 8}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port, local_addr=(src, 0)),
                self.timeout,
            )
        except (OSError, asyncio.TimeoutError) as e:
            self.error(f"connect: {type(e).__name__}")
            return
        try:
            writer.write(REQUEST)
            await asyncio.wait_for(self.first_event(reader), self.timeout)
        except asyncio.TimeoutError:
            self.error("no first event in time")
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            self.error(f"read: {type(e).__name__}: {e}"[:80])
        finally:
            if i % 2:
                # RST: the kernel drops the connection at once, no FIN handshake.
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()
                try:
                    await writer.wait_closed()
                except OSError:
                    pass
        self.done += 1

    async def first_event(self, reader):
        buf = b""
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                raise ValueError("closed before the first event")
            buf += chunk
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            if not buf.startswith(b"HTTP/1.1 200"):
                raise ValueError(buf.split(b"\r\n", 1)[0].decode(errors="replace"))
            at = buf.find(b"event: snapshot\n", head_end)
            if at >= 0 and buf.find(b"\n\n", at) >= 0:
                return

    async def run(self, start, count):
        next_i = start
        end = start + count

        async def worker():
            nonlocal next_i
            while next_i < end:
                i = next_i
                next_i += 1
                await self.cycle(i)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))


def settle(pid, seconds):
    """Waits `seconds`, then until open files stop falling (sessions still closing)."""
    time.sleep(seconds)
    last = open_files(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = open_files(pid)
        if now >= last:
            break
        last = now


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gateway", required=True, help="the sse-gateway binary")
    p.add_argument("--cycles", type=int, default=100_000)
    p.add_argument("--warmup", type=int, default=1_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per connect and first event")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before each reading")
    p.add_argument("--tolerance", type=float, default=0.05)
    args = p.parse_args()

    gw_port, admin_port, up_port = free_ports(3)
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", up_port), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()

    work = tempfile.mkdtemp(prefix="sse-soak-")
    config = os.path.join(work, "g.yaml")
    with open(config, "w") as f:
        f.write(
            f"listen: 127.0.0.1:{gw_port}\n"
            f"admin: {{ listen: 127.0.0.1:{admin_port} }}\n"
            f"upstreams: {{ soak: {{ url: \"http://127.0.0.1:{up_port}\" }} }}\n"
            "streams:\n"
            "  - path: /sse/doc\n"
            "    upstream: soak\n"
            "    poll: /doc\n"
            "    interval: 1s\n"
            "    idle: never\n"
        )
    log_path = os.path.join(work, "gateway.log")
    log = open(log_path, "w")
    gw = subprocess.Popen(
        [args.gateway, "--config", config],
        stderr=log,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", gw_port), timeout=1).close()
                break
            except OSError:
                if gw.poll() is not None or time.time() > deadline:
                    print(f"soak: the gateway did not start; log {log_path}", file=sys.stderr)
                    return 1
                time.sleep(0.05)

        load = Load(gw_port, args.concurrency, args.timeout)
        asyncio.run(load.run(0, args.warmup))
        settle(gw.pid, args.settle)
        pss0, rss0 = memory_kb(gw.pid)
        fds0 = open_files(gw.pid)
        warm_errors = sum(load.errors.values())

        started = time.time()
        asyncio.run(load.run(args.warmup, args.cycles))
        elapsed = time.time() - started
        settle(gw.pid, args.settle)
        pss1, rss1 = memory_kb(gw.pid)
        fds1 = open_files(gw.pid)
        alive = gw.poll() is None
        # Every session the gateway counted is gone again.
        clients_left = metric(admin_port, "sse_gateway_clients")
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(10)
        except subprocess.TimeoutExpired:
            gw.kill()
        upstream.shutdown()

    errors = sum(load.errors.values())
    within = lambda a, b: b <= a * (1 + args.tolerance)
    ok = alive and errors == 0 and clients_left == 0 and within(pss0, pss1) and within(fds0, fds1)
    report = {
        "cycles": args.cycles,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 1),
        "cycles_per_s": round(args.cycles / elapsed),
        "closed_with": {"fin": (args.cycles + 1) // 2, "rst": args.cycles // 2},
        "pss_kb": [pss0, pss1],
        "rss_kb": [rss0, rss1],
        "open_files": [fds0, fds1],
        "clients_attached_after": clients_left,
        "errors": errors,
        "warmup_errors": warm_errors,
        "error_kinds": load.errors,
        "gateway_alive": alive,
        "ok": ok,
    }
    print(json.dumps(report))
    print(
        f"soak: {args.cycles} cycles in {elapsed:.1f} s ({args.cycles / elapsed:.0f}/s, "
        f"{args.concurrency} at a time, half RST): PSS {pss0} -> {pss1} KB "
        f"({(pss1 - pss0) / pss0:+.1%}), RSS {rss0} -> {rss1} KB, open files {fds0} -> {fds1}, "
        f"{clients_left} clients attached after, {errors} errors: {'ok' if ok else 'FAILED'}",
        file=sys.stderr,
    )
    if not ok:
        with open(log_path) as f:
            print("soak: gateway log (last lines):\n" + "".join(f.readlines()[-20:]), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
