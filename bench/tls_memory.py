#!/usr/bin/env python3
"""Memory per idle HTTP/1.1-over-TLS SSE client of a running gateway (bench/run.sh is plain HTTP).

  tls_memory.py N PORT PID [PATH]

Opens N TLS connections (ALPN http/1.1, certificate not checked) to 127.0.0.1:PORT, subscribes
each to PATH (default /sse/prices) and waits for its snapshot, settles 4 s, and prints the
growth of PID's PSS per client. Run it with `ulimit -n` above N.
"""
import asyncio
import ssl
import sys


def pss(pid):
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


async def subscribe(ctx, port, path, conns):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    seen = b""
    while b"event: snapshot" not in seen:
        chunk = await reader.read(65536)
        if not chunk:
            raise SystemExit(f"closed before the snapshot: {seen[:200]!r}")
        seen += chunk
    conns.append((reader, writer))


async def main():
    n, port, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    path = sys.argv[4] if len(sys.argv) > 4 else "/sse/prices"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    before = pss(pid)
    conns = []
    for _ in range(0, n, 100):
        await asyncio.gather(*[subscribe(ctx, port, path, conns) for _ in range(100)])
    await asyncio.sleep(4)
    after = pss(pid)
    print(f"{len(conns)} clients: {(after - before) / len(conns):.1f} KB PSS per client")


asyncio.run(main())
