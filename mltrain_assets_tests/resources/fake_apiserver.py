"""A local stand-in for the Kubernetes API server: the wire format of what ``resources/k8s_cluster.py`` uses.

An ``http.server`` on 127.0.0.1 (a free port) that speaks the API's JSON: namespaced pods, services,
batch/v1 jobs (create, get, list with label and field selectors, delete), core/v1 events (listed by
``fieldSelector=involvedObject.name=...``) and pod logs (``follow=true`` streams until the pod ends,
``timestamps=true`` prefixes each line as the kubelet does). Objects get ``uid``,
``resourceVersion`` and ``creationTimestamp``; missing ones answer 404 with a ``Status`` body and
duplicates 409. A created Job gets its pods as the Job controller would name and label them (one
per completion index, Pending); the test drives every status change through ``set_pod_status``,
``add_event``, ``replace_pod``, ``set_job_condition`` and ``log``. Every request is recorded
(method, path, query, body) for the test to assert on.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

KINDS = {  # URL resource -> (kind, apiVersion, API prefix)
    "pods": ("Pod", "v1", "/api/v1"),
    "services": ("Service", "v1", "/api/v1"),
    "events": ("Event", "v1", "/api/v1"),
    "jobs": ("Job", "batch/v1", "/apis/batch/v1"),
}
INDEX = "batch.kubernetes.io/job-completion-index"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(ns: int) -> str:
    """RFC 3339 with nanoseconds, as the kubelet prefixes log lines (``timestamps=true``)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None


def _matches(obj: dict[str, Any], query: dict[str, str]) -> bool:
    """``labelSelector`` (equality terms) and ``fieldSelector`` (metadata.name, involvedObject.name)."""
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, query.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    for term in filter(None, query.get("fieldSelector", "").split(",")):
        path, _, value = term.partition("=")
        node: Any = obj
        for part in path.split("."):
            node = (node or {}).get(part)
        if node != value:
            return False
    return True


class FakeApiServer:
    """Start with ``with FakeApiServer() as server``; ``server.url`` is the API server's address."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name) -> object
        self.logs: dict[tuple[str, str], list[tuple[int, str]]] = {}  # (namespace, pod) -> (time in ns, line)
        self.requests: list[Request] = []
        self.created: list[str] = []  # uids in creation order (creationTimestamp has whole seconds)
        self.secrets: set[tuple[str, str]] = set()  # (namespace, name) of the Secrets that exist, for the kubelet
        self._kubelet: threading.Thread | None = None
        self._stopping = False
        self._processes: dict[tuple[str, str], subprocess.Popen] = {}
        self.lock = threading.Condition()
        self._version = 0
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.objects.clear()
            self._stopping = True
            self.lock.notify_all()  # log streams end, the kubelet stops its containers
        if self._kubelet is not None:
            self._kubelet.join(30)
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ what the test drives

    def pod(self, name: str, namespace: str = "ml") -> dict[str, Any]:
        return self.objects[("pods", namespace, name)]

    def pods(self, namespace: str = "ml", **labels: str) -> list[dict[str, Any]]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())}
        return [
            o
            for (r, ns, _), o in sorted(self.objects.items())
            if r == "pods" and ns == namespace and _matches(o, query)
        ]

    def pod_of_index(self, job: str, index: int, namespace: str = "ml") -> str:
        """The newest pod of ``job``'s completion ``index``."""
        pods = [
            p for p in self.pods(namespace, **{"job-name": job}) if p["metadata"]["annotations"][INDEX] == str(index)
        ]
        return max(pods, key=lambda p: self.created.index(p["metadata"]["uid"]))["metadata"]["name"]

    def set_pod_status(
        self,
        name: str,
        namespace: str = "ml",
        *,
        phase: str | None = None,
        conditions: list[dict[str, Any]] | None = None,
        container_statuses: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        """Replace parts of the pod's ``status`` (camelCase, as the kubelet and scheduler write it)."""
        with self.lock:
            pod = self.pod(name, namespace)
            status = pod.setdefault("status", {})
            if phase is not None:
                status["phase"] = phase
                if phase == "Running":
                    status.setdefault("startTime", now())
            if conditions is not None:
                status["conditions"] = conditions
            if container_statuses is not None:
                status["containerStatuses"] = container_statuses
            status.update(fields)
            self._bump(pod)
            self.lock.notify_all()

    def add_event(
        self, pod: str, reason: str, message: str, namespace: str = "ml", *, kind: str = "Pod", type: str = "Warning"
    ) -> None:
        with self.lock:
            name = f"{pod}.{secrets.token_hex(8)}"
            event = {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {"kind": kind, "name": pod, "namespace": namespace, "apiVersion": "v1"},
                "reason": reason,
                "message": message,
                "type": type,
                "count": 1,
                "firstTimestamp": now(),
                "lastTimestamp": now(),
                "source": {"component": "default-scheduler" if reason == "FailedScheduling" else "kubelet"},
            }
            self._store("events", namespace, event)

    def log(self, pod: str, line: str, namespace: str = "ml") -> None:
        """A line the pod's container writes (stdout/stderr)."""
        with self.lock:
            lines = self.logs.setdefault((namespace, pod), [])
            # Distinct times, as the kubelet's nanosecond clock gives: a reader joins lines of one timestamp.
            lines.append((max([time.time_ns(), *(t + 1 for t, _ in lines[-1:])]), line))
            self.lock.notify_all()

    def replace_pod(self, job: str, index: int, namespace: str = "ml") -> str:
        """The Job controller's replacement for ``index`` (after its pod failed and was ignored): a new Pending pod."""
        with self.lock:
            return self._create_job_pod(self.objects[("jobs", namespace, job)], index)

    def set_job_condition(
        self, job: str, type: str, reason: str = "", message: str = "", namespace: str = "ml"
    ) -> None:
        with self.lock:
            obj = self.objects[("jobs", namespace, job)]
            status = obj.setdefault("status", {})
            status.setdefault("conditions", []).append(
                {"type": type, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now()}
            )
            if type == "Complete":
                status.update(succeeded=obj["spec"]["completions"], active=0, completionTime=now())
            if type == "Failed":  # the Job controller deletes the pods still active
                status["active"] = 0
                for key, pod in list(self.objects.items()):
                    owners = pod["metadata"].get("ownerReferences") or []
                    ended = pod.get("status", {}).get("phase") in ("Succeeded", "Failed")
                    if key[0] == "pods" and not ended and any(o["uid"] == obj["metadata"]["uid"] for o in owners):
                        del self.objects[key]
            self._bump(obj)
            self.lock.notify_all()

    def run_pods(self, cwd: str | None = None) -> None:
        """Play the kubelet: run each new pod's container here (``python`` this interpreter, its literal env),
        its output as the pod's log, its exit as the pod's status. A missing Secret it references is
        ``CreateContainerConfigError`` with the kubelet's message; a deleted pod's process is killed."""
        self._kubelet = threading.Thread(target=self._kubelet_loop, args=(cwd,), daemon=True)
        self._kubelet.start()

    def _kubelet_loop(self, cwd: str | None) -> None:
        seen: set[tuple[str, str]] = set()
        workers: list[threading.Thread] = []
        while True:
            with self.lock:
                for (namespace, name), process in list(self._processes.items()):
                    if ("pods", namespace, name) not in self.objects and process.poll() is None:
                        process.kill()  # its pod was deleted, or the stand-in stops
                if self._stopping:
                    break
                new = [(k[1], k[2]) for k in self.objects if k[0] == "pods" and (k[1], k[2]) not in seen]
                seen.update(new)
                if not new:
                    self.lock.wait(0.05)
            for namespace, name in new:
                worker = threading.Thread(target=self._run_pod, args=(namespace, name, cwd), daemon=True)
                worker.start()
                workers.append(worker)
        for worker in workers:
            worker.join(30)

    def _run_pod(self, namespace: str, name: str, cwd: str | None) -> None:
        with self.lock:
            pod = copy.deepcopy(self.objects.get(("pods", namespace, name)))
        if pod is None:
            return
        container = pod["spec"]["containers"][0]
        refs = [e["secretRef"]["name"] for e in container.get("envFrom") or [] if "secretRef" in e]
        missing = [ref for ref in refs if (namespace, ref) not in self.secrets]
        base = {"name": container["name"], "image": container.get("image", ""), "imageID": "", "restartCount": 0}
        scheduled = [{"type": "PodScheduled", "status": "True"}]
        if missing:
            waiting = {"reason": "CreateContainerConfigError", "message": f'secret "{missing[0]}" not found'}
            self.set_pod_status(
                name,
                namespace,
                conditions=scheduled,
                container_statuses=[{**base, "ready": False, "state": {"waiting": waiting}}],
            )
            return
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}}
        args = [sys.executable if part == "python" else part for part in container.get("args") or []]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        with self.lock:
            self._processes[(namespace, name)] = process
        running = {**base, "ready": True, "state": {"running": {"startedAt": now()}}}
        self.set_pod_status(name, namespace, phase="Running", conditions=scheduled, container_statuses=[running])
        assert process.stdout is not None
        for line in process.stdout:
            self.log(name, line.rstrip("\n"), namespace)
        code = process.wait()
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "finishedAt": now()}
        with self.lock:
            if ("pods", namespace, name) in self.objects:
                self.set_pod_status(
                    name,
                    namespace,
                    phase="Succeeded" if code == 0 else "Failed",
                    container_statuses=[{**base, "ready": False, "state": {"terminated": terminated}}],
                )

    def received(self, method: str, path_part: str) -> list[Request]:
        return [r for r in list(self.requests) if r.method == method and path_part in r.path]

    # ------------------------------------------------------------------ the API's side

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = f"{self._version:08d}"

    def _store(self, resource: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        kind, api_version, _ = KINDS[resource]
        obj = copy.deepcopy(body)
        obj["kind"], obj["apiVersion"] = kind, api_version
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
        self.created.append(meta["uid"])
        self._bump(obj)
        if resource == "pods":
            obj.setdefault("status", {"phase": "Pending", "qosClass": "Burstable"})
        self.objects[(resource, namespace, meta["name"])] = obj
        self.lock.notify_all()
        return obj

    def _create_job_pod(self, job: dict[str, Any], index: int) -> str:
        meta, template = job["metadata"], job["spec"]["template"]
        name, uid = meta["name"], meta["uid"]
        labels = {
            **(template.get("metadata", {}).get("labels") or {}),
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
            INDEX: str(index),
        }
        pod_name = f"{name}-{index}-{secrets.token_hex(3)[:5]}"
        spec = copy.deepcopy(template["spec"])
        spec["hostname"] = f"{name}-{index}"
        pod = {
            "metadata": {
                "name": pod_name,
                "labels": labels,
                "annotations": {INDEX: str(index), "batch.kubernetes.io/job-completion-index": str(index)},
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": True}
                ],
            },
            "spec": spec,
        }
        self._store("pods", meta["namespace"], pod)
        return pod_name

    def create(self, resource: str, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            name = body.get("metadata", {}).get("name", "")
            if (resource, namespace, name) in self.objects:
                return 409, _status(409, "AlreadyExists", f'{resource} "{name}" already exists')
            obj = self._store(resource, namespace, body)
            if resource == "jobs":
                obj["status"] = {"active": obj["spec"]["parallelism"], "startTime": now()}
                for index in range(obj["spec"]["completions"]):
                    self._create_job_pod(obj, index)
            return 201, obj

    def delete(self, resource: str, namespace: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        with self.lock:
            obj = self.objects.pop((resource, namespace, name), None)
            if obj is None:
                return 404, _status(404, "NotFound", f'{resource} "{name}" not found')
            policy = (body or {}).get("propagationPolicy") or ("Orphan" if resource == "jobs" else "Background")
            if policy != "Orphan":  # batch/v1 Jobs orphan their pods unless told otherwise
                for key, pod in list(self.objects.items()):
                    owners = pod["metadata"].get("ownerReferences") or []
                    if key[0] == "pods" and any(o["uid"] == obj["metadata"]["uid"] for o in owners):
                        del self.objects[key]
            self.lock.notify_all()
            return 200, obj


def _flag(value: str | None) -> bool:
    """A boolean query parameter as the API server parses it (Go's strconv.ParseBool): the client sends ``True``."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"  # logs stream in chunks, as the API server sends them (urllib3 reads each on arrival)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _route(self) -> tuple[str, str, str, str, dict[str, str]]:
        """(resource, namespace, name, subresource, query) of ``/api/v1/namespaces/ns/pods/name/log?...``."""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        prefix = 2 if parts[0] == "api" else 3
        rest = parts[prefix:]
        if len(rest) < 3 or rest[0] != "namespaces" or rest[2] not in KINDS:
            return "", "", "", "", query
        if "/".join(parts[:prefix]) != KINDS[rest[2]][2].strip("/"):
            return "", "", "", "", query
        return rest[2], rest[1], rest[3] if len(rest) > 3 else "", rest[4] if len(rest) > 4 else "", query

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _send(self, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        body = self._body() if method in ("POST", "DELETE", "PUT", "PATCH") else None
        resource, namespace, name, sub, query = self._route()
        self.api.requests.append(Request(method, urlsplit(self.path).path, query, body))
        if not resource:
            return self._send(404, _status(404, "NotFound", f"the server could not find {self.path}"))
        if method == "POST" and not name:
            return self._send(*self.api.create(resource, namespace, body))
        if method == "DELETE" and name:
            return self._send(*self.api.delete(resource, namespace, name, body))
        if method != "GET":
            return self._send(405, _status(405, "MethodNotAllowed", method))
        if not name:
            with self.api.lock:
                items = [
                    copy.deepcopy(o)
                    for (r, ns, _), o in sorted(self.api.objects.items())
                    if r == resource and ns == namespace and _matches(o, query)
                ]
            kind, api_version, _ = KINDS[resource]
            version = f"{self.api._version:08d}"
            return self._send(
                200,
                {
                    "kind": f"{kind}List",
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": version},
                    "items": items,
                },
            )
        with self.api.lock:
            obj = copy.deepcopy(self.api.objects.get((resource, namespace, name)))
        if obj is None:
            return self._send(404, _status(404, "NotFound", f'{resource} "{name}" not found'))
        if sub == "log":
            return self._logs(namespace, name, query)
        return self._send(200, obj)  # the object, or its /status (the same body)

    def _logs(self, namespace: str, name: str, query: dict[str, str]) -> None:
        follow, timestamps = _flag(query.get("follow")), _flag(query.get("timestamps"))
        since = time.time_ns() - int(query["sinceSeconds"]) * 1_000_000_000 if "sinceSeconds" in query else 0
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        while True:
            with self.api.lock:
                lines = self.api.logs.get((namespace, name), [])[sent:]
                pod = self.api.objects.get(("pods", namespace, name))
                ended = pod is None or pod.get("status", {}).get("phase") in ("Succeeded", "Failed")
                if not lines and follow and not ended:
                    self.api.lock.wait(0.5)
                    continue
            sent += len(lines)
            data = "".join((f"{stamp(t)} " if timestamps else "") + line + "\n" for t, line in lines if t >= since)
            if data:
                self.wfile.write(f"{len(data.encode()):x}\r\n".encode() + data.encode() + b"\r\n")
                self.wfile.flush()
            if not follow or (ended and not lines):
                self.wfile.write(b"0\r\n\r\n")
                return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")
