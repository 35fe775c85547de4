"""A model hub on loopback: serves folders in the hub's layout over the part of the Hugging
Face hub's HTTP API that the hub client uses to download (repository info, file tree, file
metadata and contents), so that `lostface models pull` runs against a real HTTP server.

    with HubServer({"owner/name": folder}) as hub:
        pull(settings, [...], endpoint=hub.url)
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.requests: list[str] = []
        handler = _handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo: str) -> list[Path]:
        root = self.repos[repo]
        return sorted(p for p in root.rglob("*") if p.is_file())


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: tests read hub.requests instead
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo = "/".join(parts[2:4])
                if repo not in hub.repos:
                    return self._json({"error": "Repository not found"}, 404)
                if parts[4] == "revision":
                    siblings = [
                        {"rfilename": str(p.relative_to(hub.repos[repo]))} for p in hub.files(repo)
                    ]
                    return self._json({"id": repo, "sha": COMMIT, "siblings": siblings}, 200)
                if parts[4] == "tree":
                    return self._json(_tree(hub, repo), 200)
            if len(parts) >= 5 and parts[2] == "resolve":
                repo = "/".join(parts[:2])
                if repo not in hub.repos:
                    return self._json({"error": "Repository not found"}, 404)
                file = hub.repos[repo].joinpath(*parts[4:])
                if not file.is_file():
                    return self._json({"error": "Entry not found"}, 404)
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)
                return None
            return self._json({"error": "Not found"}, 404)

        def _json(self, obj: object, status: int) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 404:
                self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


def _tree(hub: HubServer, repo: str) -> list[dict]:
    root = hub.repos[repo]
    out: list[dict] = []
    for p in hub.files(repo):
        data = p.read_bytes()
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        out.append(
            {"type": "file", "oid": oid, "size": len(data), "path": str(p.relative_to(root))}
        )
    return out
