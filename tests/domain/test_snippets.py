"""The code the dashboard hands out runs as shown: each calling snippet, pasted unchanged into
Node.js and Python, reaches a service guarded by the verifier we hand out, on the same path.

``api.internal`` resolves to this machine for the snippets' processes only (a resolver shim
loaded before them); nothing else in the snippet text is touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from networking import endpoints, rotation
from networking.models import Service

SECRET = "INTERNAL_API_SECRET"
VALUE = "s3cret-value-from-the-platform"

PYTHON_SHIM = """
import socket
_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".internal"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
"""
NODE_SHIM = """
const dns = require('dns')
const lookup = dns.lookup
dns.lookup = function (host, options, callback) {
  if (typeof options === 'function') { callback = options; options = {} }
  if (typeof host === 'string' && host.endsWith('.internal')) {
    const address = '127.0.0.1'
    if (options && options.all) return process.nextTick(callback, null, [{ address, family: 4 }])
    return process.nextTick(callback, null, address, 4)
  }
  return lookup.call(this, host, options, callback)
}
"""


def guarded_path() -> str:
    """The path the Python verifier we hand out guards."""
    django = rotation.verifier_snippets(SECRET)["Python (Django)"]
    found = re.search(r'request\.path\.startswith\("([^"]+)"\)', django)
    assert found is not None
    return found.group(1)


class CalledService:
    """A service guarded as our verifier snippet guards it; it remembers what it answered."""

    def __init__(self) -> None:
        code = rotation.verifier_snippets(SECRET)["Python (Django)"].split("\n\nfrom django")[0]
        namespace: dict[str, Any] = {}
        exec(code, namespace)
        check = namespace["internal_secret_ok"]
        guarded = guarded_path()
        self.answers: list[tuple[str, int]] = []
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = 200
                if self.path.startswith(guarded):
                    os.environ[SECRET] = VALUE  # what the called service is given
                    status = 200 if check(self.headers.get("X-Internal-Secret")) else 403
                answers.append((self.path, status))
                body = b"ok" if status == 200 else b"forbidden"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def called() -> Iterator[CalledService]:
    service = CalledService()
    yield service
    service.stop()


@pytest.fixture
def shims(tmp_path: Path) -> Path:
    (tmp_path / "sitecustomize.py").write_text(PYTHON_SHIM)
    (tmp_path / "resolve-internal.js").write_text(NODE_SHIM)
    return tmp_path


def node() -> str:
    found = shutil.which("node")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not installed")
        pytest.skip("node is not installed")
    return found


def run(language: str, code: str, shims: Path, secret: str | None) -> str:
    env = {key: value for key, value in os.environ.items() if key != SECRET}
    if secret is not None:
        env[SECRET] = secret
    if language == "Python":
        env["PYTHONPATH"] = str(shims)
        command = [sys.executable, "-c", code]
    else:
        command = [node(), "--require", str(shims / "resolve-internal.js"), "-e", code]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def api(port: int) -> Service:
    return Service(name="api", display_name="api", kind=Service.Kind.WEB, ports=[port])


@pytest.mark.parametrize("language", ["Python", "Node.js"])
def test_a_caller_with_the_secret_gets_through_the_verifier(
    called: CalledService, shims: Path, language: str
) -> None:
    code = endpoints.code_snippets(api(called.port), SECRET)[language]
    assert f"http://api.internal:{called.port}{guarded_path()}" in code
    assert run(language, code, shims, VALUE) == "200 ok"
    assert called.answers == [(guarded_path(), 200)]


@pytest.mark.parametrize("language", ["Python", "Node.js"])
def test_a_caller_with_another_value_is_refused(
    called: CalledService, shims: Path, language: str
) -> None:
    code = endpoints.code_snippets(api(called.port), SECRET)[language]
    assert run(language, code, shims, "a guess") == "403 forbidden"
    assert called.answers == [(guarded_path(), 403)]


@pytest.mark.parametrize("language", ["Python", "Node.js"])
def test_without_a_shared_secret_the_call_is_plain(
    called: CalledService, shims: Path, language: str
) -> None:
    code = endpoints.code_snippets(api(called.port))[language]
    assert SECRET not in code
    assert run(language, code, shims, None) == "200 ok"
    assert called.answers == [("/", 200)]
