"""A minimal Hugging Face Hub-compatible HTTP server for tests, on 127.0.0.1.

It implements the endpoints that `huggingface_hub` (2.x) calls to create a repo, commit files (regular files inline,
large/binary files through the git-LFS "basic" transfer) and download them (`resolve`), plus model info and file
listings. Point a client at it with `HF_ENDPOINT=<server.url>`, `HF_HUB_OFFLINE=0`, `HF_HUB_DISABLE_XET=1` (the Xet
storage protocol is not implemented) and `HF_TOKEN=<server.token>` for writes.

Repos live in memory: `server.repos["org/name"]` holds every commit, so tests can inspect exactly what was pushed.
Routes the server does not know answer 404 and are recorded in `server.unknown_requests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


# Files the real Hub stores with LFS (its default .gitattributes), and anything over 10 MB.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz", ".pkl", ".zip")
LFS_MIN_SIZE = 10 * 1024 * 1024


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file (what the Hub reports as the oid/etag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def oid(self) -> str:
        """sha256 for LFS files (their LFS pointer oid), the git blob sha1 otherwise, as the Hub reports them."""
        return hashlib.sha256(self.content).hexdigest() if self.lfs else git_blob_sha1(self.content)


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_id: str
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content

    def commit_at(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return next((commit for commit in self.commits if commit.oid == oid), None)

    def files_at(self, revision: str = "main") -> dict[str, bytes]:
        """`{path: content}` of the repo at `revision` (a branch or commit oid)."""
        commit = self.commit_at(revision)
        return {} if commit is None else {path: stored.content for path, stored in commit.files.items()}


class HubServer:
    """Serve an in-memory Hub on `127.0.0.1:<free port>` from a background thread.

    Example:

    ```python
    with HubServer() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
        ...  # push and pull with huggingface_hub / transformers in a process with that environment
        hub.repos["org/name"].files_at("main")
    ```
    """

    def __init__(self, token: str = "hf_omni_encoders_test_token"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.unknown_requests: list[str] = []
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment variables that point huggingface_hub at this server."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": self.token,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            **extra,
        }

    # ------------------------------------------------------------------------------------------------ repo operations

    def create_repo(self, repo_id: str) -> bool:
        """Create `repo_id` with an initial commit holding a `.gitattributes`, as the Hub does. False if it exists."""
        with self.lock:
            if repo_id in self.repos:
                return False
            repo = Repo(repo_id)
            gitattributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
            self._add_commit(repo, "initial commit", {".gitattributes": StoredFile(gitattributes.encode(), lfs=False)})
            self.repos[repo_id] = repo
            return True

    def _add_commit(self, repo: Repo, message: str, files: dict[str, StoredFile], branch: str = "main") -> Commit:
        parent = repo.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode() + message.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + files[path].oid.encode())
        commit = Commit(oid=digest.hexdigest(), message=message, files=files)
        repo.commits.append(commit)
        repo.branches[branch] = commit.oid
        return commit


def _make_handler(hub: HubServer):
    repo = r"(?P<repo>[^/]+/[^/]+)"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        # ------------------------------------------------------------------------------------------------- plumbing

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, payload, headers: dict | None = None):
            self._send(status, json.dumps(payload).encode(), headers)

        def _error(self, status: int, code: str | None, message: str):
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._json(status, {"error": message}, headers)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {hub.token}":
                return True
            self._error(401, None, "Invalid credentials in Authorization header")
            return False

        def _repo(self, repo_id: str) -> Repo | None:
            found = hub.repos.get(repo_id)
            if found is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return found

        def _route(self, routes):
            path = unquote(urlsplit(self.path).path)
            for pattern, handler in routes:
                match = re.fullmatch(pattern, path)
                if match:
                    return handler(**match.groupdict())
            hub.unknown_requests.append(f"{self.command} {self.path}")
            self._error(404, None, f"Unknown route {self.command} {path}")

        def do_HEAD(self):
            self._route([(rf"/{repo}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", self.resolve)])

        def do_GET(self):
            self._route([
                (rf"/{repo}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", self.resolve),
                (rf"/api/models/{repo}(?:/revision/(?P<revision>[^/]+))?", self.model_info),
                (rf"/api/models/{repo}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", self.tree),
            ])

        def do_POST(self):
            self._route([
                (r"/api/repos/create", self.create_repo),
                (r"/api/validate-yaml", self.validate_yaml),
                (rf"/api/models/{repo}/preupload/(?P<revision>[^/]+)", self.preupload),
                (rf"/api/models/{repo}/commit/(?P<revision>[^/]+)", self.commit),
                (rf"/api/models/{repo}/paths-info/(?P<revision>[^/]+)", self.paths_info),
                (rf"/{repo}\.git/info/lfs/objects/batch", self.lfs_batch),
                (rf"/lfs/verify/{repo}", self.lfs_verify),
            ])

        def do_PUT(self):
            self._route([(rf"/lfs/upload/{repo}/(?P<oid>[0-9a-f]{{64}})", self.lfs_upload)])

        # -------------------------------------------------------------------------------------------------- writes

        def create_repo(self):
            if not self._authorized():
                return
            payload = json.loads(self._body())
            if payload.get("type", "model") != "model":
                return self._error(400, None, "only model repos are supported")
            namespace = payload.get("organization") or "user"  # "user": the namespace of the token's owner
            repo_id = payload["name"] if "/" in payload["name"] else f"{namespace}/{payload['name']}"
            url = f"{hub.url}/{repo_id}"
            if not hub.create_repo(repo_id):
                return self._json(409, {"error": "You already created this model repo", "url": url})
            self._json(200, {"url": url, "name": repo_id})

        def validate_yaml(self):
            payload = json.loads(self._body())
            content = payload.get("content", "")
            match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.DOTALL)
            try:
                metadata = yaml.safe_load(match.group(1)) if match else {}
                if metadata is not None and not isinstance(metadata, dict):
                    raise yaml.YAMLError("the front matter is not a mapping")
            except yaml.YAMLError as error:
                return self._json(400, {"errors": [{"message": str(error)}], "warnings": []},
                                  {"X-Error-Code": "BadRequest"})
            self._json(200, {"errors": [], "warnings": []})

        def preupload(self, repo, revision):
            if not self._authorized() or (found := self._repo(repo)) is None:
                return
            files = found.files_at(revision)
            answers = []
            for entry in json.loads(self._body())["files"]:
                lfs = entry["path"].endswith(LFS_SUFFIXES) or entry["size"] >= LFS_MIN_SIZE
                existing = files.get(entry["path"])
                answers.append({
                    "path": entry["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": None if existing is None else StoredFile(existing, lfs).oid,
                })
            self._json(200, {"files": answers, "commitOid": found.branches.get(revision)})

        def lfs_batch(self, repo):
            if not self._authorized() or (found := self._repo(repo)) is None:
                return
            payload = json.loads(self._body())
            objects = []
            for obj in payload["objects"]:
                answer = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in found.lfs_objects:
                    answer["actions"] = {
                        "upload": {"href": f"{hub.url}/lfs/upload/{repo}/{obj['oid']}"},
                        "verify": {"href": f"{hub.url}/lfs/verify/{repo}"},
                    }
                objects.append(answer)
            self._json(200, {"transfer": "basic", "objects": objects})

        def lfs_upload(self, repo, oid):
            if (found := self._repo(repo)) is None:
                return
            content = self._body()
            if hashlib.sha256(content).hexdigest() != oid:
                return self._error(400, None, "sha256 of the uploaded content does not match the oid")
            with hub.lock:
                found.lfs_objects[oid] = content
            self._send(200)

        def lfs_verify(self, repo):
            if not self._authorized() or (found := self._repo(repo)) is None:
                return
            payload = json.loads(self._body())
            content = found.lfs_objects.get(payload["oid"])
            if content is None or len(content) != payload["size"]:
                return self._error(404, None, f"LFS object {payload['oid']} was not uploaded")
            self._json(200, {"success": True})

        def commit(self, repo, revision):
            if not self._authorized() or (found := self._repo(repo)) is None:
                return
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            with hub.lock:
                head = found.commit_at(revision)
                if head is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                files = dict(head.files)
                for line in lines:
                    key, value = line["key"], line["value"]
                    if key == "file":
                        files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
                    elif key == "lfsFile":
                        content = found.lfs_objects.get(value["oid"])
                        if content is None:
                            return self._error(422, None, f"LFS file {value['path']} was not uploaded")
                        files[value["path"]] = StoredFile(content, lfs=True)
                    elif key == "deletedFile":
                        files.pop(value["path"], None)
                    elif key == "deletedFolder":
                        prefix = value["path"].rstrip("/") + "/"
                        files = {path: stored for path, stored in files.items() if not path.startswith(prefix)}
                    elif key != "header":
                        return self._error(400, None, f"Unsupported commit operation {key}")
                commit = hub._add_commit(found, header["summary"], files, branch=revision)
            self._json(200, {
                "commitUrl": f"{hub.url}/{repo}/commit/{commit.oid}",
                "commitOid": commit.oid,
                "pullRequestUrl": None,
                "success": True,
            })

        # --------------------------------------------------------------------------------------------------- reads

        def resolve(self, repo, revision, path):
            if (found := self._repo(repo)) is None:
                return
            commit = found.commit_at(revision)
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            stored = commit.files.get(path)
            if stored is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.oid}"', "Accept-Ranges": "bytes"}
            if stored.lfs:
                headers.update({"X-Linked-Etag": f'"{stored.oid}"', "X-Linked-Size": str(len(stored.content))})
            self._send(200, stored.content, headers, content_type="application/octet-stream")

        def model_info(self, repo, revision=None):
            if (found := self._repo(repo)) is None:
                return
            commit = found.commit_at(revision or "main")
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            info = {
                "_id": repo,
                "id": repo,
                "modelId": repo,
                "sha": commit.oid,
                "private": False,
                "disabled": False,
                "gated": False,
                "tags": [],
                "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            }
            readme = commit.files.get("README.md")
            match = re.match(r"^---\n(.*?)\n---\n", readme.content.decode()) if readme else None
            if match:
                card_data = yaml.safe_load(match.group(1)) or {}
                info.update({
                    "cardData": card_data,
                    "tags": list(card_data.get("tags") or []),
                    "pipeline_tag": card_data.get("pipeline_tag"),
                    "library_name": card_data.get("library_name"),
                })
            self._json(200, info)

        def _entries(self, commit: Commit, paths) -> list[dict]:
            entries = []
            for path in paths:
                stored = commit.files[path]
                size, oid = len(stored.content), git_blob_sha1(stored.content)
                entry = {"type": "file", "path": path, "size": size, "oid": oid}
                if stored.lfs:
                    entry["lfs"] = {"oid": stored.oid, "size": len(stored.content), "pointerSize": 134}
                entries.append(entry)
            return entries

        def tree(self, repo, revision, path=None):
            if (found := self._repo(repo)) is None:
                return
            commit = found.commit_at(revision)
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            prefix = (path or "").strip("/")
            paths = sorted(p for p in commit.files if not prefix or p.startswith(prefix + "/"))
            self._json(200, self._entries(commit, paths))

        def paths_info(self, repo, revision):
            if (found := self._repo(repo)) is None:
                return
            commit = found.commit_at(revision)
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            body = self._body()
            try:
                requested = json.loads(body)["paths"]
            except (json.JSONDecodeError, KeyError):
                from urllib.parse import parse_qs

                requested = parse_qs(body.decode()).get("paths", [])
            self._json(200, self._entries(commit, [p for p in requested if p in commit.files]))

    return Handler
