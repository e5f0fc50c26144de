"""`vaultd run --isolate` against a real kernel, a real daemon and hostile commands (DESIGN 12).

Every hostile case runs twice, each time as the command of a `vaultd run` of
a vault of its own with its daemon running: confined (``--isolate``), where
it must fail and leave the vault's files as they were, and as a control
without ``--isolate``, where the very same command must succeed, so that no
case can pass because it was broken to begin with. CI runs as root: so do
these, and the confinement must hold for root too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.support.daemon import DaemonEnv, stop, vaultd_argv
from tests.support.providers import Call, provider_app
from vaultd.isolation.check import NOT_INSTALLED, problems

KEY = "sk-proj-ISOLATEDkey0123456789abcdefghij"
PYTHON = sys.executable


@pytest.fixture(scope="module", autouse=True)
def isolation_here() -> None:
    missing = problems("proxy-only")
    if missing:
        message = "--isolate cannot run here: " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + " (CI installs bubblewrap: see .ci/run)")
        pytest.skip(message + " (apt install bubblewrap)")


@dataclass
class Vault:
    """A vault with its daemon running, and the paths a hostile command goes after."""

    env: DaemonEnv
    daemon: subprocess.Popen[bytes]
    log: Path

    @property
    def key(self) -> Path:
        return Path(self.env.vars["XDG_CONFIG_HOME"]) / "vaultd" / "master.key"

    @property
    def data(self) -> Path:
        return Path(self.env.vars["XDG_DATA_HOME"]) / "vaultd"

    @property
    def db(self) -> Path:
        return self.data / "vault.db"

    def footprint(self) -> dict[str, str]:
        """Every file of the vault and the config, and a digest of its bytes."""
        found = {}
        for root in (self.key.parent, self.data, self.env.config_file):
            paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for path in paths:
                if path.name.endswith(("-wal", "-shm")):
                    continue  # SQLite's own, which the daemon may touch
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return found

    def run(
        self, *args: str, isolate: bool = True, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        flags = ["--isolate"] if isolate else []
        return subprocess.run(
            vaultd_argv("run", "--service", "openai", *flags, *args),
            env={**self.env.vars, **env},
            cwd=self.env.tmp,
            capture_output=True,
            text=True,
            errors="replace",  # a control run may print the binary key file
            timeout=timeout,
            check=False,
        )


def _vault(tmp: Path, config: str = "") -> Iterator[Vault]:
    env = DaemonEnv(tmp, config)
    for args, stdin in ((("init",), None), (("add", "openai", "primary"), KEY + "\n")):
        done = subprocess.run(
            vaultd_argv(*args),
            env=env.vars,
            cwd=tmp,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    daemon, log = env.start()
    env.wait_healthy(daemon, log)
    try:
        yield Vault(env, daemon, log)
    finally:
        stop(daemon)


@pytest.fixture(scope="module")
def confined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    yield from _vault(tmp_path_factory.mktemp("confined"))


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    yield from _vault(tmp_path_factory.mktemp("control"))


# A shell command, its paths those of the vault it is run against; it exits 0
# only when the attack worked.
READ_MEMORY = (
    PYTHON + ' -c "import sys; p=sys.argv[1];'
    " a=int(open('/proc/'+p+'/maps').readline().split('-')[0], 16);"
    " f=open('/proc/'+p+'/mem','rb'); f.seek(a); sys.exit(0 if f.read(16) else 1)\" {pid}"
)
VAULTD = f"env PYTHONPATH={{pythonpath}} VAULTD_CONFIG={{config}} {PYTHON} -m vaultd"
HOSTILE = {
    "cat the key file": "cat {key}",
    "open vault.db with sqlite3": (
        f'{PYTHON} -c "import sqlite3,sys; sqlite3.connect(sys.argv[1])'  # noqa: S608 - a test's
        ".execute('select count(*) from credentials').fetchone()\" {db}"
    ),
    "list the data dir": "ls {data} | grep -q vault.db",
    "rm the key file": "rm {key}",
    "mv the key file": "mv {key} {key}.moved",
    "create a file in the data dir": "touch {data}/planted",
    "vaultd session create": f"{VAULTD} session create --ttl 1h",
    "vaultd list": f"{VAULTD} list | grep -q primary",
    "read the daemon's environ": "grep -qa VAULTD_CONFIG /proc/{pid}/environ",
    "read the daemon's memory": READ_MEMORY,
    "signal the daemon": "kill -0 {pid}",
    "follow a symlink planted into the data dir": "cat {tmp}/planted-link | grep -qa SQLite",
    "a relative path via ..": "cd {data}/../../share && cat ./vaultd/vault.db | grep -qa SQLite",
    "a grandchild in a new session": "setsid -w sh -c 'cat {key}'",
}


def _command(vault: Vault, template: str) -> str:
    return template.format(
        key=vault.key,
        db=vault.db,
        data=vault.data,
        tmp=vault.env.tmp,
        pid=vault.daemon.pid,
        config=vault.env.config_file,
        pythonpath=vault.env.vars["PYTHONPATH"],
    )


def _plant(vault: Vault) -> None:
    link = vault.env.tmp / "planted-link"
    if not link.is_symlink():
        link.symlink_to(vault.db)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_command_fails_confined_and_works_without(
    confined: Vault, control: Vault, case: str
) -> None:
    for vault in (confined, control):
        _plant(vault)
    before = confined.footprint()
    inside = confined.run("--", "sh", "-c", _command(confined, HOSTILE[case]))
    assert inside.returncode != 0, (case, inside.stdout, inside.stderr)
    if case.startswith("vaultd"):
        # vaultd itself, inside, fails as it should: one line, no traceback.
        assert "Traceback" not in inside.stderr and "Error: " in inside.stderr, inside.stderr
    assert confined.footprint() == before, case
    assert confined.daemon.poll() is None
    assert KEY not in inside.stdout + inside.stderr
    # The control: the same command, unconfined, does what it set out to.
    key = control.key.read_bytes()
    try:
        outside = control.run("--", "sh", "-c", _command(control, HOSTILE[case]), isolate=False)
    finally:
        _restore(control, key)
    assert outside.returncode == 0, (case, outside.stdout, outside.stderr)


def _restore(control: Vault, key: bytes) -> None:
    """Undo what a control run did to its own vault, so that the next can use it."""
    Path(f"{control.key}.moved").unlink(missing_ok=True)
    if not control.key.exists():
        control.key.write_bytes(key)
        control.key.chmod(0o600)
    (control.data / "planted").unlink(missing_ok=True)


def test_a_hard_link_made_beforehand_is_refused_and_nothing_runs(
    confined: Vault, tmp_path: Path
) -> None:
    link = confined.env.tmp / "hard-link"
    os.link(confined.key, link)
    marker = tmp_path / "ran"
    try:
        done = confined.run("--", "touch", str(marker))
    finally:
        link.unlink()
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "hard links" in line and str(confined.key) in line
    assert not marker.exists()
    # Without the link, the same command runs confined.
    assert confined.run("--", "touch", str(marker)).returncode == 0
    assert marker.exists()


def test_the_daemon_survives_a_real_kill_from_inside(confined: Vault) -> None:
    done = confined.run("--", "sh", "-c", f"kill -TERM {confined.daemon.pid}")
    assert done.returncode != 0
    time.sleep(0.2)
    assert confined.daemon.poll() is None
    assert confined.env.request("GET", "/healthz")[0] == 200


def test_the_run_process_is_out_of_reach(confined: Vault, control: Vault) -> None:
    # The command learns its `vaultd run`'s pid from a file the test writes.
    for vault, isolate in ((confined, True), (control, False)):
        pidfile = vault.env.tmp / "run.pid"
        pidfile.unlink(missing_ok=True)
        snippet = (
            f"for i in $(seq 50); do [ -s {pidfile} ] && break; sleep 0.1; done; "
            f"pid=$(cat {pidfile}); grep -qa PATH /proc/$pid/environ && kill -0 $pid"
        )
        flags = ["--isolate"] if isolate else []
        proc = subprocess.Popen(
            vaultd_argv("run", "--service", "openai", *flags, "--", "sh", "-c", snippet),
            env=vault.env.vars,
            cwd=vault.env.tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        pidfile.write_text(str(proc.pid))
        _out, err = proc.communicate(timeout=60)
        assert (proc.returncode != 0) is isolate, err


def test_everything_else_works_inside(confined: Vault, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    script = (
        "git init -q . && echo hi > a.txt && git add a.txt && "
        "git -c user.name=t -c user.email=t@t commit -qm first && "
        f"{PYTHON} -c 'print(6 * 7)' && echo x > $HOME/elsewhere.txt && "
        'cat $HOME/elsewhere.txt && test -n "$OPENAI_API_KEY"'
    )
    done = subprocess.run(
        vaultd_argv("run", "--service", "openai", "--isolate", "--", "sh", "-c", script),
        env=confined.env.vars,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42", "x"]
    assert (project / ".git").is_dir()


def test_an_exit_status_passes_through(confined: Vault) -> None:
    assert confined.run("--", "sh", "-c", "exit 7").returncode == 7


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts: what proxy-only must not reach."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_proxy_only_reaches_the_daemon_and_nothing_else(confined: Vault, listener: int) -> None:
    def connects(where: str) -> str:
        return (
            f"{PYTHON} -c \"import socket,sys; socket.create_connection(('127.0.0.1', {where}),"
            ' timeout=3).close()"'
        )

    daemon_port = confined.env.port
    for net, expected in (("all", 0), ("proxy-only", 1)):
        done = confined.run("--net", net, "--", "sh", "-c", connects(str(listener)))
        assert done.returncode == expected, (net, done.stderr)
    done = confined.run("--net", "proxy-only", "--", "sh", "-c", connects(str(daemon_port)))
    assert done.returncode == 0, done.stderr


def test_unavailable_isolation_refuses_in_one_line_and_runs_nothing(
    confined: Vault, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    sessions_before = _sessions(confined)
    # No bubblewrap on this PATH: the check fails, as on a machine without it.
    done = confined.run("--", "touch", str(marker), PATH=str(tmp_path))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line == f"Error: --isolate is not available here: {NOT_INSTALLED}"
    assert not marker.exists()
    assert _sessions(confined) == sessions_before  # nothing was minted either


def _sessions(vault: Vault) -> list[str]:
    listed = subprocess.run(
        vaultd_argv("session", "list", "--all", "--json"),
        env=vault.env.vars,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [session["id"] for session in json.loads(listed)]


def test_net_proxy_only_without_isolate_is_a_usage_error(confined: Vault) -> None:
    done = confined.run("--net", "proxy-only", "--", "true", isolate=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "Error: --net proxy-only needs --isolate"


SDK_SCRIPT = """
import json, openai
client = openai.OpenAI()
answer = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
)
client.close()
print(json.dumps([answer.choices[0].message.content, answer.usage.total_tokens]))
"""


async def test_the_openai_sdk_works_end_to_end_confined_to_the_proxy(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    calls: list[Call] = []
    upstream = await aiohttp_server(provider_app(calls), host="127.0.0.1")
    env = DaemonEnv(tmp_path, f'[services.openai]\nbase_url = "http://127.0.0.1:{upstream.port}"\n')
    for args, stdin in ((("init",), b""), (("add", "openai", "primary"), KEY.encode() + b"\n")):
        await env.check(*args, stdin=stdin)
    daemon, _log = env.start()
    try:
        await env.up()
        script = tmp_path / "agent.py"
        script.write_text(SDK_SCRIPT)
        proc = await env.spawn(
            *("run", "--service", "openai", "--isolate", "--net", "proxy-only"),
            *("--", PYTHON, str(script)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        stop(daemon)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == ["Hello there!", 20]
    (call,) = calls
    # The real key went upstream from the daemon; the command held a token only.
    assert call.headers["Authorization"] == f"Bearer {KEY}"


SYSTEM_PROBE = """
import os, stat, sys
problems = []
for path in ("/proc/sys", "/sys"):
    if not os.statvfs(path).f_flag & os.ST_RDONLY:
        problems.append(path + " is writable")
try:
    open("/proc/sys/kernel/core_pattern", "r+").close()
    problems.append("core_pattern opens for writing")
except OSError:
    pass
for name in os.listdir("/dev"):
    try:
        mode = os.stat(os.path.join("/dev", name)).st_mode
    except OSError:
        continue
    if stat.S_ISBLK(mode):
        problems.append("block device /dev/" + name)
others = [n for n in os.listdir("/dev/pts") if n.isdigit()]
if len(others) > 1:
    problems.append("other terminals: " + ",".join(others))
print("; ".join(problems))
sys.exit(1 if problems else 0)
"""


def test_the_kernel_the_disks_and_other_terminals_are_out_of_reach(
    confined: Vault, tmp_path: Path
) -> None:
    # As root (CI): sysctls such as core_pattern would run a program as real
    # root, a raw disk holds the key's blocks, cgroup.kill stops the daemon.
    probe = tmp_path / "probe.py"
    probe.write_text(SYSTEM_PROBE)
    done = confined.run("--", PYTHON, str(probe))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_bwrap_planted_earlier_on_path_is_never_run(confined: Vault, tmp_path: Path) -> None:
    planted = tmp_path / "bin"
    planted.mkdir()
    fake = planted / "bwrap"
    marker = tmp_path / "fake-ran"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 0\n")
    fake.chmod(0o755)
    path = f"{planted}:{confined.env.vars['PATH']}"
    done = confined.run("--", "sh", "-c", f"cat {confined.key}", PATH=path)
    assert done.returncode != 0
    assert not marker.exists()


def test_the_passphrase_file_named_in_the_environment_is_hidden(
    confined: Vault, tmp_path: Path
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse battery staple\n")
    secret.chmod(0o600)
    done = confined.run("--", "sh", "-c", f"cat {secret}", VAULTD_PASSPHRASE_FILE=str(secret))
    assert done.returncode != 0
    assert "horse" not in done.stdout


def test_a_symlinked_config_dir_the_command_could_swap_is_refused(tmp_path: Path) -> None:
    env = DaemonEnv(tmp_path)
    real = tmp_path / "dotfiles" / "vaultd"
    real.mkdir(parents=True, mode=0o700)
    config_dir = Path(env.vars["XDG_CONFIG_HOME"]) / "vaultd"
    config_dir.parent.mkdir(parents=True)
    config_dir.symlink_to(real)
    done = subprocess.run(
        vaultd_argv("init"), env=env.vars, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    daemon, log = env.start()
    try:
        env.wait_healthy(daemon, log)
        marker = tmp_path / "ran"
        done = subprocess.run(
            vaultd_argv("run", "--isolate", "--", "touch", str(marker)),
            env=env.vars,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        stop(daemon)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "through the symlink" in line and str(config_dir) in line
    assert not marker.exists()


def test_the_session_sockets_are_hidden_and_their_variables_dropped(
    confined: Vault, tmp_path: Path
) -> None:
    tmux = tmp_path / "tmux-sockets"
    tmux.mkdir(mode=0o700)
    (tmux / "default").write_text("a socket stands here")
    done = confined.run(
        "--",
        "sh",
        "-c",
        f'test -z "$TMUX" && test -z "$DBUS_SESSION_BUS_ADDRESS" && ! ls {tmux}',
        TMUX=f"{tmux}/default,123,0",
        DBUS_SESSION_BUS_ADDRESS=f"unix:path={tmux}/bus",
    )
    assert done.returncode == 0, done.stderr
