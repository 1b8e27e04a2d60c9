"""SIGTERM's drain (README "Stopping"): the health check answers 503, every HTTP/2 connection
gets nghttp2's two-step GOAWAY (a notice with last-stream-id 2^31-1 and a PING; at the PING's
ACK, or a second later, the final GOAWAY with the last stream processed), streams in flight
and those sent between the two GOAWAYs are answered, HTTP/1.1 answers carry Connection: close
and idle keep-alive connections are closed, connections accepted while draining are served,
and the listener is closed once nothing is left (a new connection is refused, not reset).

Requests are held in flight by batch_max_delay_ms (a batch waits that long for company), so
that SIGTERM finds them there."""
import json
import os
import socket
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

from helpers import (EXPORTER_HEADERS_UA, body_bytes, fixture_envelope, fixture_files,
                     need_tool, wait_until)

GOAWAY, PING = 0x7, 0x6
NOTICE_ID = 2 ** 31 - 1


def report():
    return body_bytes(fixture_envelope(fixture_files()[0]))


def frames_of(buf):
    """(whole frames [(type, payload, raw)], the rest)."""
    out, pos = [], 0
    while len(buf) - pos >= 9:
        length = int.from_bytes(buf[pos:pos + 3], "big")
        if len(buf) - pos < 9 + length:
            break
        out.append((buf[pos + 3], buf[pos + 9:pos + 9 + length], buf[pos:pos + 9 + length]))
        pos += 9 + length
    return out, buf[pos:]


class FrameClient:
    """python3-h2 over a socket, fed frame by frame so that the test acts between two frames
    (GOAWAY frames are kept from h2, which would close its state on the first one)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(0.2)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sent = {}  # stream id -> {"status", "ended"}
        self.goaways = []
        self.order = []  # ("goaway", last) and ("ping", ack) as they came
        self.eof = False
        self.rx = b""
        self.flush()

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def post(self, n, body=None, path="/collector"):
        """n POSTs, each of a report of its own (or `body`)."""
        for _ in range(n):
            data = body if body is not None else report()
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                         (":path", path), (":authority", "kohaku"),
                                         *EXPORTER_HEADERS_UA,
                                         ("content-length", str(len(data)))])
            self.conn.send_data(sid, data, end_stream=True)
            self.sent[sid] = {"status": None, "ended": False}
        self.flush()

    def run(self, on_goaway=None, until=None, timeout=30):
        """Reads until EOF (or until(self)); on_goaway(self, last_stream_id) runs at each
        GOAWAY, before the frames behind it reach h2."""
        deadline = time.monotonic() + timeout
        while not self.eof and not (until and until(self)):
            assert time.monotonic() < deadline, (self.goaways, self.sent)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                raise AssertionError(f"connection reset by kohaku: {self.sent}")
            if not data:
                self.eof = True
                break
            frames, self.rx = frames_of(self.rx + data)
            for ftype, payload, raw in frames:
                if ftype == GOAWAY:
                    last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                    self.goaways.append((last, int.from_bytes(payload[4:8], "big")))
                    self.order.append(("goaway", last))
                    if on_goaway:
                        on_goaway(self, last)
                    continue
                if ftype == PING:
                    self.order.append(("ping", bool(raw[4] & 1)))
                for ev in self.conn.receive_data(raw):
                    st = self.sent.get(getattr(ev, "stream_id", None))
                    if isinstance(ev, h2.events.ResponseReceived) and st is not None:
                        st["status"] = int(dict(ev.headers)[":status"])
                    elif isinstance(ev, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(ev.flow_controlled_length,
                                                            ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded) and st is not None:
                        st["ended"] = True
                    elif isinstance(ev, h2.events.StreamReset) and st is not None:
                        st["status"] = "reset"
                self.flush()

    def close(self):
        self.sock.close()


def streams_open(k, n):
    return lambda: k.metric("kohaku_http2_streams") >= n


@pytest.mark.storage("sqlite", "postgres")
def test_h2_two_goaways_and_streams_between_them_answered(db, kohaku_factory):
    k = kohaku_factory(batch_max_delay_ms=1500)
    c = FrameClient(k.port)
    c.post(4)
    wait_until(streams_open(k, 4), 10, message="4 streams in flight")
    k.signal(15)
    between = []

    def on_goaway(cl, last):
        if len(cl.goaways) == 1:  # the notice: streams sent now are still taken
            before = set(cl.sent)
            cl.post(3)
            between.extend(sorted(set(cl.sent) - before))

    c.run(on_goaway=on_goaway)
    c.close()
    assert c.eof, "kohaku did not close the connection"
    assert len(c.goaways) == 2, c.goaways
    assert c.goaways[0] == (NOTICE_ID, 0), c.goaways
    # the final one names the last stream, the ones sent between the two included
    assert c.goaways[1] == (max(c.sent), 0), (c.goaways, sorted(c.sent), c.order)
    assert between and max(between) == max(c.sent)
    # the PING behind the notice came after it; the final GOAWAY after the client's ACK was
    # sent (the ACK is what h2 answers that PING with)
    kinds = [o for o in c.order if o[0] in ("goaway", "ping") and o[1] is not True]
    assert kinds[:3] == [("goaway", NOTICE_ID), ("ping", False), ("goaway", max(c.sent))], \
        c.order
    assert {sid: st["status"] for sid, st in c.sent.items()} == \
        {sid: 204 for sid in c.sent}, c.sent
    assert all(st["ended"] for st in c.sent.values())
    assert k.wait_exit(20) == 0, k.describe()
    assert db.count("sora_report") == 7
    log = k.log_text()
    for msg in ("shutting down", "http/2 goaway notice sent", "http/2 goaway sent",
                "drain done: connections closed"):
        assert f'"msg":"{msg}"' in log, (msg, log[-3000:])


def test_h2_notice_without_ping_ack_final_goaway_after_a_second(kohaku_factory):
    """A peer that never reads (so never answers the PING): the final GOAWAY comes anyway,
    about a second later, and the stream in flight is answered."""
    k = kohaku_factory(batch_max_delay_ms=1500)
    c = FrameClient(k.port)
    c.post(1, report())
    wait_until(streams_open(k, 1), 10, message="a stream in flight")
    k.signal(15)
    time.sleep(1.5)  # the scenario: the client reads nothing meanwhile, no ACK goes back
    t0 = time.monotonic()
    c.run()
    assert [g[0] for g in c.goaways] == [NOTICE_ID, 1], c.goaways
    assert c.sent[1]["status"] == 204
    assert time.monotonic() - t0 < 5
    assert k.wait_exit(20) == 0


def test_curl_and_nghttp_requests_in_flight_at_sigterm_all_answered(kohaku_factory, tmp_path):
    need_tool("nghttp")
    k = kohaku_factory(batch_max_delay_ms=4000)
    bodies = []
    for i in range(6):
        p = tmp_path / f"r{i}.json"
        p.write_bytes(report())
        bodies.append(str(p))
    url = f"http://127.0.0.1:{k.port}/collector"
    hdr = ["-H", "x-sora-stats-exporter-type: connection.user-agent",
           "-H", "content-type: application/json"]
    procs = [subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
                               "-w", "%{http_code}", *hdr, "--data-binary", f"@{b}", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for b in bodies[:4]]
    # nghttp: several streams on one connection, each with a body
    ng = subprocess.Popen(["nghttp", "-v", "-m", "4", "-d", bodies[4], *hdr, url],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(streams_open(k, 8), 10, message="8 streams in flight")
    k.signal(15)
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0 and out == "204", (out, err)
    out, _ = ng.communicate(timeout=30)
    assert ng.returncode == 0, out
    assert out.count(":status: 204") == 4, out
    goaways = [l for l in out.splitlines() if "recv GOAWAY" in l]
    assert len(goaways) == 2, out
    assert k.wait_exit(20) == 0, k.describe()


def h1_read_response(sock):
    """One HTTP/1.1 response: (status, headers dict lower-cased, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"EOF before a response: {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict((n.strip().lower(), v.strip()) for n, v in
                   (l.split(":", 1) for l in lines[1:]))
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), headers, rest[:n]


def at_eof(sock, timeout=5):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return "reset"


def test_h1_keep_alive_connection_close_and_health_503(kohaku_factory):
    k = kohaku_factory(batch_max_delay_ms=1500)
    env = fixture_envelope(fixture_files()[0], type="connection.rtc")
    del env["multistream"]
    body = body_bytes(env)
    post = (f"POST /webhook/stats HTTP/1.1\r\nHost: kohaku\r\n"
            f"sora-stats-webhook-type: connection.rtc\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body
    # idle: a keep-alive connection that has had its answer
    idle = socket.create_connection(("127.0.0.1", k.port), timeout=10)
    idle.sendall(b"GET /.ok HTTP/1.1\r\nHost: kohaku\r\n\r\n")
    status, headers, _ = h1_read_response(idle)
    assert status == 204 and headers.get("connection") != "close"
    # busy: its report waits for the batch when SIGTERM comes
    busy = socket.create_connection(("127.0.0.1", k.port), timeout=10)
    busy.sendall(post)
    wait_until(lambda: k.metric("kohaku_pending_reports") >= 1, 5,
               message="the report read in, its batch waiting")
    k.signal(15)
    assert at_eof(idle) is True, "the idle keep-alive connection was not closed"
    # a health check on a new connection while draining: 503, and the connection closes
    hc = socket.create_connection(("127.0.0.1", k.port), timeout=10)
    hc.sendall(b"GET /.ok HTTP/1.1\r\nHost: kohaku\r\n\r\n")
    status, headers, hbody = h1_read_response(hc)
    assert status == 503 and headers.get("connection") == "close", (status, headers)
    assert b"draining" in hbody
    assert at_eof(hc) is True
    status, headers, _ = h1_read_response(busy)
    assert status == 204 and headers.get("connection") == "close", (status, headers)
    assert at_eof(busy) is True
    for s in (idle, busy, hc):
        s.close()
    assert k.wait_exit(20) == 0, k.describe()


def test_listener_closed_when_drained(kohaku_factory):
    """Once the drain is done the port refuses connections (a load balancer's retry goes
    elsewhere at once) while the reports taken are still being stored."""
    k = kohaku_factory(batch_max_delay_ms=3000)
    c = FrameClient(k.port)
    c.post(1, report())
    wait_until(streams_open(k, 1), 10, message="a stream in flight")
    k.signal(15)
    c.run()
    assert c.sent[1]["status"] == 204
    c.close()
    k.wait_log('"msg":"drain done: connections closed"', timeout=10)
    if k.proc.poll() is None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", k.port), timeout=2).close()
    assert k.wait_exit(20) == 0


def test_h2_connection_opened_while_draining_is_served(kohaku_factory):
    """A connection that arrives after SIGTERM (a load balancer that has not seen the 503
    yet) is accepted, gets the two GOAWAYs, and its streams are answered."""
    k = kohaku_factory(batch_max_delay_ms=2000)
    first = FrameClient(k.port)
    first.post(1)  # keeps the drain going
    wait_until(streams_open(k, 1), 10, message="a stream in flight")
    k.signal(15)
    k.wait_log('"msg":"shutting down"', timeout=5)
    late = FrameClient(k.port)
    late.post(2)
    late.run()
    first.run()
    assert [g[0] for g in late.goaways] == [NOTICE_ID, 3], late.goaways
    assert [st["status"] for st in late.sent.values()] == [204, 204], late.sent
    assert first.sent[1]["status"] == 204
    for c in (first, late):
        c.close()
    assert k.wait_exit(20) == 0
