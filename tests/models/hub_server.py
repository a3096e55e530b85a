"""A Hugging Face hub on 127.0.0.1 for tests: the endpoints huggingface_hub 2.4 calls.

HEAD and GET on `/{repo}/resolve/{revision}/{file}` (X-Repo-Commit, ETag and Content-Length, as
the hub sends them) and `/api/models/{repo}/revision/{revision}` for listing a repo. promptlab runs
in a subprocess (`promptlab`, `env_for`) because huggingface_hub reads HF_ENDPOINT and HF_HOME when
it is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from promptlab.models import file_sha256

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_promptlab_test_token"


@dataclass
class Repo:
    sha: str
    files: dict[str, Path]  # path in the repo → the local file served


@dataclass
class Hub:
    """A hub endpoint on 127.0.0.1 that serves `repos` and logs every request."""

    repos: dict[str, Repo]
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        hub_ = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub_.requests.append((self.command, path, self.headers.get("authorization")))
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"]:
                    self.listing(parts[2:])
                    return
                if len(parts) >= 5 and parts[2] == "resolve":
                    self.resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
                    return
                self.fail(404, "RepoNotFound")
                return

            def listing(self, parts: list[str]) -> None:
                repo = hub_.repos.get("/".join(parts[:2]))
                if repo is None:
                    self.fail(404, "RepoNotFound")
                    return
                if parts[2:3] == ["revision"] and parts[3] not in ("main", repo.sha):
                    self.fail(404, "RevisionNotFound")
                    return
                data = json.dumps(
                    {
                        "id": "/".join(parts[:2]),
                        "sha": repo.sha,
                        "siblings": [{"rfilename": name} for name in sorted(repo.files)],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
                repo = hub_.repos.get(repo_id)
                if repo is None:
                    self.fail(404, "RepoNotFound")
                    return
                if revision not in ("main", repo.sha):
                    self.fail(404, "RevisionNotFound")
                    return
                if name not in repo.files:
                    self.fail(404, "EntryNotFound", commit=repo.sha)
                    return
                local = repo.files[name]
                size = local.stat().st_size
                self.send_response(200)
                self.send_header("X-Repo-Commit", repo.sha)
                self.send_header("ETag", f'"{file_sha256(local)}"')  # an LFS file's ETag
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if body:
                    with local.open("rb") as f:
                        while block := f.read(1 << 20):
                            self.wfile.write(block)

            def fail(self, status: int, code: str, commit: str | None = None) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def env_for(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_TELEMETRY="1",
        PROMPTLAB_CACHE=str(tmp_path / "cache"),
        HOME=str(tmp_path / "home"),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),  # the repository root
        **extra,
    )
    return env


def promptlab(
    *args: str | Path, env: dict[str, str], cwd: Path, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promptlab", *(str(a) for a in args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
