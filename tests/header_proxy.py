"""A stand-in for the plant's single-sign-on proxy (oauth2-proxy, an IdP-aware nginx) in the browser tests.

It forwards every connection to the app and rewrites each request's head the way such a proxy is configured
to: any ``X-Forwarded-User`` / ``X-Forwarded-Email`` / secret header the client sent is dropped, and the
user its session cookie names (``_sso_user``; a real proxy keeps an encrypted session there) is added as
``X-Forwarded-User``, with ``secret`` in ``X-Tac-Studio-Proxy-Secret`` when given. A WebSocket upgrade is
rewritten the same way, then piped as it is. (A browser cannot be made to send a header with a WebSocket
handshake: Chromium leaves Playwright's ``extra_http_headers`` out of it; cookies it does send.)
"""
from __future__ import annotations

import socket
import threading
from http.cookies import SimpleCookie
from typing import Optional

COOKIE = "_sso_user"
DROPPED = {"x-forwarded-user", "x-forwarded-email", "x-tac-studio-proxy-secret"}


class HeaderProxy:
    def __init__(self, target_port: int, secret: Optional[str] = None) -> None:
        self.target_port, self.secret = target_port, secret
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        buffered = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffered:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                head, buffered = buffered.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = [line for line in lines[1:] if line.split(":", 1)[0].strip().lower() not in DROPPED]
                user = self._user(headers)
                if user:
                    headers.append(f"X-Forwarded-User: {user}")
                if self.secret:
                    headers.append(f"X-Tac-Studio-Proxy-Secret: {self.secret}")
                upstream.sendall(("\r\n".join([lines[0], *headers]) + "\r\n\r\n").encode("latin-1"))
                if any(h.lower().replace(" ", "") == "upgrade:websocket" for h in headers):
                    upstream.sendall(buffered)
                    _pipe(client, upstream)
                    return
                length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
                while len(buffered) < length:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                upstream.sendall(buffered[:length])
                buffered = buffered[length:]
        except OSError:
            pass
        finally:
            for end in (client, upstream):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    @staticmethod
    def _user(headers: list[str]) -> str:
        for line in headers:
            name, _, value = line.partition(":")
            if name.strip().lower() == "cookie":
                morsel = SimpleCookie(value.strip()).get(COOKIE)
                if morsel is not None:
                    return morsel.value
        return ""


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass
