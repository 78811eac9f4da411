"""The explain server under load and under bad requests: hundreds of simultaneous requests
are all answered, a path with a null byte gets 400 and no traceback, directories are not
listed."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from amlab.explain import STATIC_DIR, serve
from amlab.explain.server import LISTEN_BACKLOG

CLIENTS = 300


@pytest.fixture
def server():
    server = serve(0, background=True)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def raw_request(port: int, target: bytes) -> bytes:
    """The raw answer to ``GET <target>`` (bytes as they are: no client quoting)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_hundreds_of_simultaneous_requests_are_all_answered(server):
    port = server.server_address[1]
    assert server.request_queue_size == LISTEN_BACKLOG >= 128
    expected = (STATIC_DIR / "index.html").read_bytes()
    start = threading.Barrier(CLIENTS)
    answers: list[object] = [None] * CLIENTS

    def fetch(i: int) -> None:
        start.wait()  # every client connects at once
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=15) as r:
                answers[i] = (r.status, r.read())
        except (OSError, http.client.HTTPException) as exc:  # a dropped connection
            answers[i] = exc

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(CLIENTS)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    failed = [a for a in answers if not (isinstance(a, tuple) and a == (200, expected))]
    assert not failed, f"{len(failed)} of {CLIENTS} requests failed, e.g. {failed[0]!r}"
    # a generous bound (the standard library's backlog of 5 took 11-31 s for 200 clients,
    # 128 took under a second); the measured time is in the message of a failure
    assert took < 20, f"{CLIENTS} simultaneous requests took {took:.1f} s"


@pytest.mark.parametrize(
    "target", [b"/index%00.html", b"/%00", b"/assets/%00/x.js", b"/index.html\x00", b"/%ff%fe"]
)
def test_a_path_the_file_system_cannot_name_is_a_bad_request(server, target, capfd):
    answer = raw_request(server.server_address[1], target)
    status = answer.split(b"\r\n", 1)[0]
    assert status.split()[1] in (b"400", b"404"), status
    if b"%00" in target or b"\x00" in target:
        assert status.split()[1] == b"400", status
    server_output = capfd.readouterr()
    assert "Traceback" not in server_output.err and "Traceback" not in server_output.out


@pytest.mark.parametrize("directory", ["/assets/", "/data/", "/assets"])
def test_directories_are_not_listed(server, directory):
    url = f"http://127.0.0.1:{server.server_address[1]}{directory}"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10)
    assert caught.value.code == 404
    assert b"Directory listing" not in caught.value.read()


def test_the_app_and_its_files_are_still_served(server):
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with urllib.request.urlopen(base + "/", timeout=10) as r:  # the root serves index.html
        assert r.read() == (STATIC_DIR / "index.html").read_bytes()
    asset = next(p for p in (STATIC_DIR / "assets").iterdir() if p.suffix == ".js")
    with urllib.request.urlopen(f"{base}/assets/{asset.name}", timeout=10) as r:
        assert r.headers["Content-Type"] == "text/javascript" and r.read() == asset.read_bytes()
