#!/usr/bin/env python3
"""What `array_keys` saves on the wire: a list of 500 orders changes (one inserted on top and 3
changed, and two other edits), and two SSE clients of the real gateway, one on a stream with
`array_keys: {/orders: id}` and one on the same upstream without it, each receive the change.
Prints a table and writes bench/results/array_keys.json: per scenario and per stream, the event
sent (`patch` or `snapshot`), its data bytes and bytes on the wire, the op count, and the
snapshot's size. Every patch is applied (RFC 6902, below) and must give the upstream's document.

    cargo build --release && bench/array_keys.py            # target/release/sse-gateway
    bench/array_keys.py target/debug/sse-gateway            # any build: bytes do not depend on it

Needs python3 only; the upstream is http.server in this process. Sizes, not speed: it runs on a
busy machine just as well.
"""

import copy
import http.client
import http.server
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_ORDERS = 500


def order(rng, n):
    """One order as an order-list endpoint returns it."""
    lines = []
    for _ in range(rng.randint(1, 4)):
        sku = rng.randint(1000, 9999)
        lines.append({
            "sku": f"SKU-{sku}",
            "name": rng.choice(["Espresso beans 1kg", "Oat milk 6x1l", "Paper cups x100",
                                "Grinder burr set", "Descaler 500ml", "Milk jug 600ml"]),
            "qty": rng.randint(1, 12),
            "unit_price": round(rng.uniform(2, 90), 2),
        })
    created = 1764590000 + n * 37
    return {
        "id": f"ord_{n:06d}",
        "customer": {"id": f"cus_{rng.randint(1, 400):05d}",
                     "name": rng.choice(["Ada Lovelace", "Alan Turing", "Grace Hopper",
                                         "Edsger Dijkstra", "Barbara Liskov", "Ken Thompson"]),
                     "email": f"buyer{rng.randint(1, 400)}@example.com"},
        "items": lines,
        "total": round(sum(l["qty"] * l["unit_price"] for l in lines), 2),
        "currency": "EUR",
        "status": rng.choice(["open", "paid", "packed"]),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created + 60)),
    }


def changed(o, status):
    o = copy.deepcopy(o)
    o["status"] = status
    o["updated_at"] = "2026-12-02T08:00:00Z"
    return o


def scenarios(rng, base):
    """(name, new document) for each edit of `base`, the newest order first."""
    orders = base["orders"]
    top = copy.deepcopy(orders)
    top.insert(0, order(rng, N_ORDERS + 1))
    for i in (10, 200, 450):
        top[i + 1] = changed(top[i + 1], "shipped")
    removed = copy.deepcopy(orders)
    del removed[300]
    for i in (10, 200, 450):
        removed[i] = changed(removed[i], "shipped")
    moved = copy.deepcopy(orders)
    moved.insert(0, moved.pop(499))
    moved[0] = changed(moved[0], "priority")
    return [
        ("one inserted on top, 3 changed", {**base, "orders": top, "count": len(top)}),
        ("one removed, 3 changed", {**base, "orders": removed, "count": len(removed)}),
        ("the oldest moved to the top and changed", {**base, "orders": moved}),
    ]


# --- RFC 6902 (only what the gateway sends), to check every patch rebuilds the document ---

def _walk(doc, pointer):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    parent = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    return parent, parts[-1]


def _remove(doc, pointer):
    parent, last = _walk(doc, pointer)
    return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)


def _add(doc, pointer, value):
    parent, last = _walk(doc, pointer)
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value


def apply(doc, patch):
    doc = copy.deepcopy(doc)
    for op in patch:
        kind = op["op"]
        if kind == "add":
            _add(doc, op["path"], copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, op["path"])
        elif kind == "replace":
            parent, last = _walk(doc, op["path"])
            parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op["value"])
        elif kind == "move":
            _add(doc, op["path"], _remove(doc, op["from"]))
        else:
            raise ValueError(f"unexpected op {kind}")
    return doc


# --- the upstream and the clients ---

class Upstream(http.server.BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self):
        body = Upstream.body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """An SSE client reading events off the socket, with each event's bytes on the wire."""

    def __init__(self, port, path):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status
        self.doc = None

    def event(self):
        kind, data, wire = "message", [], 0
        while True:
            line = self.resp.fp.readline()
            if not line:
                raise EOFError("the stream ended")
            wire += len(line)
            text = line.decode().rstrip("\r\n")
            if text == "":
                if data or kind != "message":
                    return kind, "\n".join(data), wire
                wire = 0
                continue
            field, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)

    def change(self):
        """The next snapshot or patch, applied to the client's document."""
        while True:
            kind, data, wire = self.event()
            if kind == "snapshot":
                self.doc = json.loads(data)
                return kind, data, wire
            if kind == "patch":
                self.doc = apply(self.doc, json.loads(data))
                return kind, data, wire


def main():
    gateway = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/sse-gateway")
    rng = random.Random(12)
    base = {"orders": [order(rng, n) for n in range(N_ORDERS, 0, -1)], "count": N_ORDERS}
    up_port, gw_port, admin_port = free_port(), free_port(), free_port()
    Upstream.body = json.dumps(base).encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", up_port), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp()
    cfg = os.path.join(work, "gateway.yaml")
    with open(cfg, "w") as f:
        f.write(f"""listen: 127.0.0.1:{gw_port}
admin: {{ listen: 127.0.0.1:{admin_port} }}
upstreams: {{ api: {{ url: "http://127.0.0.1:{up_port}" }} }}
defaults: {{ upstream: api, interval: 100ms }}
streams:
  - {{ path: /sse/keyed, poll: /api/orders, array_keys: {{ /orders: id }} }}
  - {{ path: /sse/by-index, poll: /api/orders }}
""")
    gw = subprocess.Popen([gateway, "--config", cfg], stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", gw_port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        clients = {"array_keys": Client(gw_port, "/sse/keyed"),
                   "by index": Client(gw_port, "/sse/by-index")}
        for c in clients.values():
            assert c.change()[0] == "snapshot"
        results = []
        for n, (name, doc) in enumerate(scenarios(rng, base)):
            if n > 0:
                # Each edit starts from the same 500 orders.
                Upstream.body = json.dumps(base).encode()
                for c in clients.values():
                    c.change()
            text = json.dumps(doc, separators=(",", ":"))
            Upstream.body = text.encode()
            row = {"scenario": name, "orders": len(doc["orders"]), "snapshot_bytes": len(text)}
            for label, c in clients.items():
                kind, data, wire = c.change()
                assert c.doc == doc, f"{label}: the patch did not rebuild the document"
                row[label] = {"event": kind, "data_bytes": len(data), "wire_bytes": wire,
                              "ops": len(json.loads(data)) if kind == "patch" else None}
            results.append(row)
    finally:
        gw.terminate()
        gw.wait(10)
        server.shutdown()
    print(f"{'scenario':42} {'snapshot B':>10} | {'array_keys':>22} | {'by index':>22}")
    for r in results:
        cell = lambda s: f"{s['event']} {s['data_bytes']} B" + (f", {s['ops']} ops" if s["ops"] else "")
        print(f"{r['scenario']:42} {r['snapshot_bytes']:>10} | {cell(r['array_keys']):>22} | {cell(r['by index']):>22}")
    out = os.path.join(ROOT, "bench/results/array_keys.json")
    with open(out, "w") as f:
        json.dump({"what": "one change of a 500-order list, through the gateway on the wire",
                   "command": "bench/array_keys.py " + os.path.relpath(gateway, ROOT),
                   "results": results}, f, indent=2)
        f.write("\n")
    print(f"-> {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    main()
