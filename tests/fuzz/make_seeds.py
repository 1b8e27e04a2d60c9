#!/usr/bin/python3
"""Writes seed corpora for the fuzz targets into OUTDIR/<target>/, made from the browser
fixtures and the project's own config: usage make_seeds.py OUTDIR [FIXTURES]."""
import glob
import json
import os
import sys

import h2.config
import h2.connection

out = sys.argv[1]
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
fixtures = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    root, "tests", "fixtures", "browser")


def envelope(stats, **over):
    env = {"type": "connection.user-agent", "id": "Q4M2G8T1ZK7B3X9H5N6R0PWC2D",
           "timestamp": "2026-11-24T06:15:42.123456Z", "label": "WebRTC SFU Sora",
           "version": "2024.1.0", "node_name": "sora@10.0.0.5", "multistream": True,
           "simulcast": False, "spotlight": False, "role": "sendrecv", "channel_id": "room",
           "session_id": "7H3KQ2M9ZV1B8C4X6N0R5T2W9E", "client_id": "alice",
           "connection_id": "F2ZK8Q1M7C3V9B5X0N6T4R2W8H", "stats": stats}
    env.update(over)
    return json.dumps(env).encode()


def write(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


node = json.dumps({"type": "node.erlang-vm", "timestamp": "2026-11-24T06:15:42.5Z",
                   "label": "l", "version": "v", "node_name": "n", "stats": [
                       {"type": "erlang-vm-memory", "total": 1, "binary": 2}]}).encode()
bodies = []
for i, path in enumerate(sorted(glob.glob(os.path.join(fixtures, "*-t*.json")))):
    stats = json.load(open(path))
    body = envelope(stats)
    bodies.append(body)
    write("envelope", f"fixture{i}", bytes([0x40 + 4 * i]) + body)
write("envelope", "node", b"\x01" + node)
write("envelope", "webhook", b"\x02" + envelope([], type="connection.rtc"))

logs = os.path.join(root, "tests", "fixtures", "sora-logs-sample")
for log, first in (("session_webhook.jsonl", 0x00), ("event_webhook.jsonl", 0x01)):
    for i, line in enumerate(open(os.path.join(logs, log), "rb")):
        line = line.rstrip(b"\n")
        write("lifecycle", f"{log[:5]}-line{i}", bytes([first | 0x04 | 0x30]) + line)
        body = json.dumps(json.loads(line)["req"]).encode()
        write("lifecycle", f"{log[:5]}-body{i}", bytes([first | 0x10]) + body)

write("config", "example", open(os.path.join(root, "config.example.ini"), "rb").read())
write("config", "kohaku2023", b"debug = false\nlisten_port = 5890\nhttps = false\n"
      b"postgres_uri = postgres://u:p@127.0.0.1:5432/k?sslmode=disable\n"
      b"tls_fullchain_file =\nhttp2_max_concurrent_streams = 250\n")

small = bodies[0]
write("h1", "ok", b"GET /.ok HTTP/1.1\r\nHost: x\r\n\r\n")
write("h1", "webhook", b"POST /webhook/stats HTTP/1.1\r\nHost: x\r\n"
      b"sora-stats-webhook-type: connection.rtc\r\nContent-Length: %d\r\n\r\n%s"
      % (len(small), small))
write("h1", "pipelined", b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
      b"GET /.ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
write("h1", "chunked", b"POST /webhook/stats HTTP/1.1\r\nHost: x\r\n"
      b"sora-stats-webhook-type: connection.rtc\r\nTransfer-Encoding: chunked\r\n\r\n"
      b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")

for name, path, hdrs, body in (
        ("collector", "/collector", [("x-sora-stats-exporter-type", "connection.user-agent")],
         small),
        ("node", "/collector", [("x-sora-stats-exporter-type", "node.erlang-vm")], node),
        ("ok", "/.ok", [], b"")):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST" if body else "GET"), (":path", path),
                       (":scheme", "http"), (":authority", "x"), *hdrs],
                   end_stream=not body)
    if body:
        c.send_data(1, body[:16000], end_stream=True)
    data = c.data_to_send()
    write("h2", name, data[24:])  # the target adds the preface itself
write("h1", "session-webhook", b"POST /webhook/session HTTP/1.1\r\nHost: x\r\n"
      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
