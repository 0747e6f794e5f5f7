"""A tiny in-memory fake of the GCS JSON API, enough for gcsfs (tests only, no network).

Implements what gcsfs calls for files: object metadata, media download (with Range), listing
with prefix/delimiter (paged), simple/multipart/resumable uploads, delete, bucket metadata.
Point gcsfs at it with ``GCSFileSystem(endpoint_url=server.endpoint, token="anon")``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_PAGE = 1000


class FakeGCS:
    def __init__(self, buckets: tuple[str, ...] = ("bucket",)):
        self.buckets = set(buckets)
        self.objects: dict[tuple[str, str], tuple[bytes, dict]] = {}
        self.uploads: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) log, for assertions
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeGCS:
        fake = self

        class Handler(_Handler):
            store = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeGCS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- object model -------------------------------------------------------------------------
    def put(self, bucket: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> dict:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self.lock:
            prev = self.objects.get((bucket, name))
            gen = int(prev[1]["generation"]) + 1 if prev else 1
            meta = {
                "kind": "storage#object", "id": f"{bucket}/{name}/{gen}", "bucket": bucket, "name": name,
                "size": str(len(data)), "contentType": content_type, "generation": str(gen),
                "metageneration": "1", "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),
                "timeCreated": now, "updated": now, "storageClass": "STANDARD",
            }
            self.objects[(bucket, name)] = (bytes(data), meta)
        return meta


class _Handler(BaseHTTPRequestHandler):
    store: FakeGCS
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output quiet
        pass

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, code: int, body: bytes | dict | None = None, headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        self.send_response(code)
        if isinstance(body, dict):
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, code: int, message: str) -> None:
        self._send(code, {"error": {"code": code, "message": message, "errors": [{"message": message}]}})

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path
        self.store.requests.append((self.command, self.path))
        routes = [
            ("GET", r"/(?:storage|download/storage)/v1/b/([^/]+)/o/(.+)", self._get_object),
            ("GET", r"/storage/v1/b/([^/]+)/o", self._list),
            ("GET", r"/storage/v1/b/([^/]+)", self._get_bucket),
            ("GET", r"/storage/v1/b", self._list_buckets),
            ("POST", r"/upload/storage/v1/b/([^/]+)/o", self._upload),
            ("PUT", r"/upload/storage/v1/b/([^/]+)/o", self._upload),
            ("DELETE", r"/upload/storage/v1/b/([^/]+)/o", self._cancel_upload),
            ("DELETE", r"/storage/v1/b/([^/]+)/o/(.+)", self._delete),
        ]
        for method, pattern, fn in routes:
            m = re.fullmatch(pattern, path)
            if method == self.command and m:
                return fn(q, *(unquote(g) for g in m.groups()))
        self._body()
        self._error(501, f"fake GCS does not implement {self.command} {path}")

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    # -- routes -------------------------------------------------------------------------------
    def _bucket_ok(self, bucket: str) -> bool:
        if bucket not in self.store.buckets:
            self._error(404, f"The specified bucket does not exist: {bucket}")
            return False
        return True

    def _get_bucket(self, q: dict, bucket: str) -> None:
        if self._bucket_ok(bucket):
            self._send(200, {"kind": "storage#bucket", "name": bucket, "id": bucket, "location": "US"})

    def _list_buckets(self, q: dict) -> None:
        items = [{"kind": "storage#bucket", "name": b, "id": b} for b in sorted(self.store.buckets)]
        self._send(200, {"kind": "storage#buckets", "items": items})

    def _get_object(self, q: dict, bucket: str, name: str) -> None:
        if not self._bucket_ok(bucket):
            return
        obj = self.store.objects.get((bucket, name))
        if obj is None:
            return self._error(404, f"No such object: {bucket}/{name}")
        data, meta = obj
        if q.get("alt") != "media":
            return self._send(200, meta)
        rng = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if rng:
            start = int(rng[1] or 0)
            end = min(int(rng[2]) if rng[2] else len(data) - 1, len(data) - 1)
            headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
            return self._send(206, data[start:end + 1], headers)
        self._send(200, data, {"Content-Type": meta["contentType"]})

    def _list(self, q: dict, bucket: str) -> None:
        if not self._bucket_ok(bucket):
            return
        prefix, delim = q.get("prefix", ""), q.get("delimiter", "")
        items, prefixes = [], set()
        for (b, name), (_, meta) in sorted(self.store.objects.items()):
            if b != bucket or not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if delim and delim in rest:
                prefixes.add(prefix + rest.split(delim, 1)[0] + delim)
            else:
                items.append(meta)
        entries = [("i", m["name"], m) for m in items] + [("p", p, p) for p in prefixes]
        entries.sort(key=lambda e: e[1])
        start = int(q.get("pageToken") or 0)
        size = min(int(q.get("maxResults") or _PAGE), _PAGE)
        page = entries[start:start + size]
        out: dict = {"kind": "storage#objects"}
        if page_items := [e[2] for e in page if e[0] == "i"]:
            out["items"] = page_items
        if page_prefixes := [e[2] for e in page if e[0] == "p"]:
            out["prefixes"] = page_prefixes
        if start + size < len(entries):
            out["nextPageToken"] = str(start + size)
        self._send(200, out)

    def _delete(self, q: dict, bucket: str, name: str) -> None:
        with self.store.lock:
            found = self.store.objects.pop((bucket, name), None)
        if found is None:
            return self._error(404, f"No such object: {bucket}/{name}")
        self._send(204)

    def _store(self, q: dict, bucket: str, name: str, data: bytes, ctype: str) -> None:
        if q.get("ifGenerationMatch") == "0" and (bucket, name) in self.store.objects:
            return self._error(412, "At least one of the pre-conditions you specified did not hold.")
        self._send(200, self.store.put(bucket, name, data, ctype))

    def _upload(self, q: dict, bucket: str) -> None:
        body = self._body()
        if not self._bucket_ok(bucket):
            return
        kind = q.get("uploadType", "media")
        if "upload_id" in q:
            return self._upload_chunk(q, bucket, body)
        if kind == "media":
            return self._store(q, bucket, q["name"], body, self.headers.get("Content-Type", ""))
        if kind == "multipart":
            ctype = self.headers.get("Content-Type", "")
            boundary = re.search(r'boundary="?([^";]+)"?', ctype)
            if not boundary:
                return self._error(400, "multipart upload without boundary")
            sep = b"--" + boundary[1].encode()
            parts = [p for p in body.split(sep) if p.strip() not in (b"", b"--")]
            if len(parts) != 2:
                return self._error(400, f"multipart upload needs 2 parts, got {len(parts)}")
            heads = []
            for part in parts:
                nl = b"\r\n" if part.startswith(b"\r\n") else b"\n"
                head, _, content = part[len(nl):].partition(nl + nl)
                # the newline before the next "--boundary" belongs to the framing, not the data
                heads.append((head.decode(), content[: -len(nl)] if content.endswith(nl) else content))
            meta = json.loads(heads[0][1])
            data = heads[1][1]
            ptype = re.search(r"Content-Type:\s*(\S+)", heads[1][0], re.I)
            return self._store(q, bucket, meta.get("name") or q["name"], data, ptype[1] if ptype else "")
        if kind == "resumable":
            meta = json.loads(body or b"{}")
            upload_id = uuid.uuid4().hex
            self.store.uploads[upload_id] = {
                "bucket": bucket, "name": meta.get("name") or q["name"], "buf": bytearray(),
                "ctype": self.headers.get("X-Upload-Content-Type", "application/octet-stream"),
                "q": q,
            }
            loc = f"{self.store.endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&upload_id={upload_id}"
            return self._send(200, b"", {"Location": loc})
        self._error(400, f"unknown uploadType {kind}")

    def _upload_chunk(self, q: dict, bucket: str, body: bytes) -> None:
        up = self.store.uploads.get(q["upload_id"])
        if up is None:
            return self._error(404, "no such upload session")
        m = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", self.headers.get("Content-Range", ""))
        if not m:
            return self._error(400, "bad Content-Range")
        if m[1] is not None:
            if int(m[1]) != len(up["buf"]):
                return self._error(400, "chunk offset does not match the received bytes")
            up["buf"] += body
        total = m[3]
        if total != "*" and len(up["buf"]) >= int(total):
            del self.store.uploads[q["upload_id"]]
            return self._store(up["q"], up["bucket"], up["name"], bytes(up["buf"]), up["ctype"])
        headers = {"Range": f"bytes=0-{len(up['buf']) - 1}"} if up["buf"] else {}
        self._send(308, b"", headers)

    def _cancel_upload(self, q: dict, bucket: str) -> None:
        self.store.uploads.pop(q.get("upload_id", ""), None)
        self._send(204)
