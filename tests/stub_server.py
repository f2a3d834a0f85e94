"""A tiny OpenAI-compatible model server on loopback whose faults a test controls.

Why not the real llama.cpp server for these: the faults are what the server does on the wire
(answers ``/health`` but never a completion; takes one request at a time; starts listening a
while after its process exists), and a stub does exactly that, at once and every time. The real
server is used where its own death is the fault (tests/test_practice.py, the live tests).

:class:`StubServer` answers ``POST /v1/chat/completions`` (streamed as server-sent events or not)
with a fixed patient line, or a JSON tip when the request asks for a JSON answer.
:class:`StubProcess` puts one behind the app's model supervisor in place of
:class:`agent.runtime.EmbeddedServer` (a sleeping child process stands in for llama-server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agent.runtime import free_port

LINE = "Fine. Tell me what you can do about it."
TIP_JSON = json.dumps({"tip": "Say what you will do next.", "better_phrasing": "I will check the diary now."})


class StubServer:
    """``hang``: completions are never answered (until :meth:`close`); ``delay``: seconds before
    each answer starts; ``serial``: one completion at a time, like a single llama.cpp slot."""

    def __init__(self, *, port: int = 0, hang: bool = False, delay: float = 0.0, serial: bool = False) -> None:
        self.hang = hang
        self.delay = delay
        self.completions = 0
        self._closed = threading.Event()
        self._one = threading.Lock() if serial else None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self._closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        if self.hang:
            self._closed.wait(60)  # took the request, never answers it
            return
        if self._one is not None:
            with self._one:
                self._write(handler, body)
        else:
            self._write(handler, body)

    def _write(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        time.sleep(self.delay)
        self.completions += 1
        text = TIP_JSON if "response_format" in body else LINE
        if not body.get("stream"):
            answer = {"id": "stub", "object": "chat.completion", "created": 0, "model": "stub",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                   "finish_reason": "stop"}]}  # fmt: skip
            data = json.dumps(answer).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        pieces = [piece + " " for piece in text.split(" ")]
        for piece, last in zip(pieces, [False] * (len(pieces) - 1) + [True], strict=True):
            chunk = {"id": "stub", "object": "chat.completion.chunk", "created": 0, "model": "stub",
                     "choices": [{"index": 0, "delta": {"content": piece.rstrip() if last else piece},
                                  "finish_reason": "stop" if last else None}]}  # fmt: skip
            handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            handler.wfile.flush()
        handler.wfile.write(b"data: [DONE]\n\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                data = b'{"status": "ok"}' if self.path == "/health" else b"{}"
                self.send_response(200 if self.path == "/health" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.endswith("/chat/completions"):
                    stub._answer(self, body)
                else:
                    self.send_error(404)

        return Handler


class StubProcess:
    """What :class:`agent.practice.ModelSupervisor` uses of ``EmbeddedServer``, over a stub.

    ``ensure()`` starts a child process (the "server") and a :class:`StubServer` on a port chosen
    up front, listening ``listen_after`` seconds after the process exists (llama-server loads its
    model first). ``hang_first``: the first server hangs; a restarted one answers.
    """

    alias = "stub"

    def __init__(self, *, hang_first: bool = False, listen_after: float = 0.0, **stub_options: object) -> None:
        self.hang_first = hang_first
        self.listen_after = listen_after
        self.stub_options = stub_options
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.stub: StubServer | None = None
        self.starts = 0
        self._lock = threading.Lock()

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ensure(self) -> StubProcess:
        with self._lock:  # as EmbeddedServer.ensure: one start at a time
            if self.process is not None and self.process.poll() is None:
                return self
            self.stop()
            self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            self.starts += 1
            time.sleep(self.listen_after)
            hang = self.hang_first and self.starts == 1
            self.stub = StubServer(port=self.port, hang=hang, **self.stub_options)  # type: ignore[arg-type]
            return self

    def stop(self) -> None:
        if self.stub is not None:
            self.stub.close()
            self.stub = None
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    kill = stop
