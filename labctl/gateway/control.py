"""The gateway's JSON control API over a Unix socket: one JSON object per line each way.

Requests: ``{"cmd": "status"}``, ``{"cmd": "list-sas"}``, ``{"cmd": "initiate", "name": CONN}``,
``{"cmd": "terminate", "name": CONN}``, ``{"cmd": "rekey", "name": CONN, "what": "child"|"ike"}``.
Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "plain words"}``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 64 * 1024


class ControlClient:
    """Send one request to a running gateway and return its reply."""

    def __init__(self, path: str | Path, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply: dict[str, Any] = json.loads(buf)
        return reply


class ControlConnection:
    """One accepted client: buffers its bytes and answers each complete line."""

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.handler = handler
        self.buf = b""

    def on_readable(self) -> bool:
        """Read what is there; return False when the connection should be closed."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self.buf += data
        if len(self.buf) > MAX_REQUEST:
            self._reply({"ok": False, "error": "request too large"})
            return False
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self._reply(self._dispatch(line))
        return True

    def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except json.JSONDecodeError as exc:
            return {"ok": False, "error": f"not JSON: {exc.msg}"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": 'expected an object like {"cmd": "status"}'}
        try:
            return self.handler(req)
        except Exception as exc:  # noqa: BLE001 - a bad request must never kill the daemon
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def _reply(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, default=str).encode() + b"\n"
        # Replies are small; a client that does not read gets dropped rather than blocking the data plane.
        self.sock.setblocking(True)
        self.sock.settimeout(1.0)
        try:
            self.sock.sendall(data)
        except OSError:
            pass
        finally:
            self.sock.setblocking(False)


def listen(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_socket():
        path.unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    path.chmod(0o600)
    s.listen(16)
    s.setblocking(False)
    return s
