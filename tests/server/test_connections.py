"""Connections against a real uvicorn server: ones that send nothing (or too slowly) are
closed, a connection limit answers 503, and normal requests are untouched."""

import time

from live_server import LiveServer, closed_by_server, http_post, read_response

from ldm.server.connections import ConnectionLimits

QUICK = ConnectionLimits(head_seconds=0.5, body_seconds=0.5, keep_alive_seconds=1, max_connections=10)


def test_connections_that_send_nothing_or_too_slowly_are_closed(worker):
    with LiveServer(worker, QUICK) as server:
        silent = server.connect()
        partial_head = server.connect()
        partial_head.sendall(b"GET /sdapi/v1/progress HTTP/1.1\r\nHost: x\r\n")
        dripping = server.connect()
        stalled_body = server.connect()
        stalled_body.sendall(http_post("/sdapi/v1/txt2img", b'{"prompt": "x"}')[:-5])
        started = time.monotonic()
        try:
            for byte in b"GET /sdapi/v1/progress HTTP/1.1\r\n":  # a byte every 0.2 s does not extend the deadline
                dripping.sendall(bytes([byte]))
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while dripping: as it should be
        for sock in (silent, partial_head, dripping, stalled_body):
            assert closed_by_server(sock, within=3), "a stalled connection stayed open"
            sock.close()
        assert time.monotonic() - started < 5


def test_normal_requests_and_keep_alive_still_work(worker):
    with LiveServer(worker, QUICK) as server:
        sock = server.connect()
        for _ in range(2):  # two requests on one connection, the second after a pause
            sock.sendall(b"GET /sdapi/v1/progress HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200
            time.sleep(0.7)  # longer than the head deadline: between requests keep-alive rules
        assert closed_by_server(sock, within=3)  # then the keep-alive timeout closes it
        sock.close()


def test_a_request_slower_than_the_head_deadline_in_total_but_whole_is_served(worker):
    with LiveServer(worker, QUICK) as server:
        sock = server.connect()
        time.sleep(0.3)
        sock.sendall(b"GET /sdapi/v1/progress HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.close()


def test_beyond_the_connection_limit_requests_get_503(worker):
    limits = ConnectionLimits(head_seconds=5, body_seconds=5, max_connections=2)
    with LiveServer(worker, limits) as server:
        held = [server.connect() for _ in range(2)]
        time.sleep(0.2)
        extra = server.connect()
        extra.sendall(b"GET /sdapi/v1/progress HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(extra)[0] == 503
        for sock in (*held, extra):
            sock.close()
