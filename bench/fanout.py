#!/usr/bin/env python3
"""Memory per idle client and fan-out time of one change, against the real gateway binary.

Starts a small upstream (asyncio, loopback), the gateway on a free port, N SSE clients; reads
the gateway's RSS and PSS before and after they attach, then changes the upstream document and
times each client's receipt of the patch from the moment the upstream served the new version.

    cargo build --release && python3 bench/fanout.py --clients 1000 --changes 5

Figures are for comparing runs on one machine; the load generator shares its cores.
"""
import argparse, asyncio, json, os, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mem_kb(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


class Upstream:
    """Serves /doc; `change()` makes the next poll see a new version and records when it was served."""

    def __init__(self, size):
        self.version, self.size, self.served_at = 0, size, {}

    def body(self):
        doc = {"version": self.version, "pad": "x" * self.size, "at": self.version * 7}
        return json.dumps(doc).encode()

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                body = self.body()
                self.served_at.setdefault(self.version, time.monotonic())
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        writer.close()


async def client(port, source, ready, results, stop):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"GET /sse/doc HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    buf = b""
    snapshot = False
    while not stop.is_set():
        chunk = await reader.read(65536)
        if not chunk:
            break
        now = time.monotonic()
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            if b"event: snapshot" in block and not snapshot:
                snapshot = True
                ready.release()
            elif b"event: patch" in block:
                data = block.split(b"data: ", 1)[1].split(b"\n", 1)[0]
                for op in json.loads(data):
                    if op["path"] == "/version":
                        results.setdefault(op["value"], []).append(now)
    writer.close()


async def main(args):
    up = Upstream(args.size)
    up_port, gw_port = free_port(), free_port()
    server = await asyncio.start_server(up.handle, "127.0.0.1", up_port)
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(f"""listen: 127.0.0.1:{gw_port}
upstreams:
  api:
    url: http://127.0.0.1:{up_port}
streams:
  - path: /sse/doc
    upstream: api
    poll: /doc
    interval: {args.interval}ms
limits:
  max_clients: {args.clients + 10}
""")
    cfg.close()
    binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "sse-gateway")
    gw = subprocess.Popen([binary, "--config", cfg.name], stderr=subprocess.DEVNULL,
                          env={**os.environ, "RUST_LOG": "warn"})
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", gw_port)).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        base = mem_kb(gw.pid)
        ready, results, stop = asyncio.Semaphore(0), {}, asyncio.Event()
        t0 = time.monotonic()
        tasks = [asyncio.create_task(client(gw_port, f"127.0.0.{1 + i % 8}", ready, results, stop))
                 for i in range(args.clients)]
        for _ in range(args.clients):
            await ready.acquire()
        attach = time.monotonic() - t0
        await asyncio.sleep(args.settle)
        loaded = mem_kb(gw.pid)
        lat = []
        lasts = []
        for _ in range(args.changes):
            up.version += 1
            v = up.version
            while len(results.get(v, [])) < args.clients:
                await asyncio.sleep(0.01)
            served = up.served_at[v]
            got = [t - served for t in results[v]]
            lat += got
            lasts.append(max(got))
            await asyncio.sleep(0.2)
        stop.set()
        for t in tasks:
            t.cancel()
        lat.sort()
        ms = lambda x: round(x * 1000, 1)
        report = {
            "clients": args.clients,
            "attach_s": round(attach, 2),
            "rss_kb_before": base[0], "rss_kb_after": loaded[0],
            "pss_kb_before": base[1], "pss_kb_after": loaded[1],
            "rss_kb_per_client": round((loaded[0] - base[0]) / args.clients, 2),
            "pss_kb_per_client": round((loaded[1] - base[1]) / args.clients, 2),
            "changes": args.changes,
            "latency_ms_p50": ms(statistics.median(lat)),
            "latency_ms_p99": ms(lat[int(len(lat) * 0.99) - 1]),
            "latency_ms_max": ms(lat[-1]),
            "last_client_ms_median": ms(statistics.median(lasts)),
        }
        print(json.dumps(report, indent=2))
    finally:
        gw.terminate()
        gw.wait()
        server.close()
        os.unlink(cfg.name)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--changes", type=int, default=5)
    p.add_argument("--size", type=int, default=1000, help="bytes of padding in the document")
    p.add_argument("--interval", type=int, default=100, help="poll interval in ms")
    p.add_argument("--settle", type=float, default=2.0)
    asyncio.run(main(p.parse_args()))
