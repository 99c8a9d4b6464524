"""Shared fixtures: a local HTTP(S) server with switchable faults, for anything that downloads.

    def test_x(http_server):
        http_server.files["/a.zip"] = b"..."
        url = http_server.url("/a.zip")
        http_server.range_support = False   # answer 200 with the whole body, ignoring Range
        http_server.drop_after["/a.zip"] = 100  # next GET of it: 100 body bytes, then cut (once)
        http_server.status["/a.zip"] = 404  # answer this status for that path
        http_server.count("/a.zip")         # requests seen for the path (http_server.requests: all)
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class LocalServer:
    """State shared between a test and the server thread; tests flip the switches freely."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    range_support: bool = True
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> cut its next body after N bytes, once
    status: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base_url + path

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def take_drop(self, path: str) -> int | None:
        with self.lock:
            return self.drop_after.pop(path, None)


def _handler(state: LocalServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            with state.lock:
                state.requests.append(Request(self.command, path, dict(self.headers.items())))
            code = state.status.get(path)
            if code is None and path not in state.files:
                code = 404
            if code is not None:
                self._plain(code)
                return
            data = state.files[path]
            start, end, code = 0, len(data) - 1, 200
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
            if match and state.range_support:
                start = int(match.group(1))
                end = min(int(match.group(2)), end) if match.group(2) else end
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                code = 206
            payload = data[start:end + 1]
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            if state.range_support:
                self.send_header("Accept-Ranges", "bytes")
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if not body:
                return
            cut = state.take_drop(path)
            if cut is None:
                self.wfile.write(payload)
                return
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _plain(self, code: int) -> None:
            text = f"{code} {HTTPStatus(code).phrase}\n".encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

    return Handler


def _serve(state: LocalServer, context: ssl.SSLContext | None = None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if context is not None else "http"
    state.base_url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def http_server():
    """A threaded HTTP server on 127.0.0.1 (random port) serving `files`, with fault switches."""
    state = LocalServer()
    server, thread = _serve(state)
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 that no client trusts: a real TLS verification failure."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def https_server(tmp_path_factory):
    """Like http_server, over TLS with a self-signed certificate (verification fails unless disabled)."""
    cert_file, key_file = _self_signed_cert(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    state = LocalServer()
    server, thread = _serve(state, context)
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# ---------------------------------------------------------------- pipeline workspaces
# Shared by tests/test_dag_consistency.py and tests/test_pipeline_*.py: a copy of this repository
# (what git would commit: tracked plus untracked-not-ignored files) in which the real `snakemake`
# and `dvc` commands run, with this interpreter's environment (the .venv) first on PATH.
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINE_PARAMS = REPO_ROOT / "tests" / "fixtures" / "pipeline.yaml"


def copy_repository(dest: Path, params: Path | None = None) -> Path:
    """Copy the repository's files into `dest` (a git repository with one commit, which `dvc exp`
    needs); `params` becomes its params.yaml."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    if params is not None:
        shutil.copyfile(params, dest / "params.yaml")
    env = pipeline_env(dest)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "--no-verify", "-m", "copy"]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True, capture_output=True)
    return dest


def pipeline_env(root: Path) -> dict[str, str]:
    """The environment of a pipeline run in `root`: its own sources, this venv's tools, no spinning."""
    return {**os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(root / "src"),
            "OMP_WAIT_POLICY": "PASSIVE",
            "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "actionrepro tests", "GIT_AUTHOR_EMAIL": "tests@actionrepro.invalid",
            "GIT_COMMITTER_NAME": "actionrepro tests", "GIT_COMMITTER_EMAIL": "tests@actionrepro.invalid"}


def run_tool(root: Path, *args: str, timeout: float = 600) -> str:
    """stdout + stderr of a command run in `root`; an AssertionError with its output if it fails."""
    proc = subprocess.run(list(args), cwd=root, env=pipeline_env(root), capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"`{shlex.join(args)}` exited {proc.returncode} in {root}:\n{out[-6000:]}")
    return out


def snakemake_plan(root: Path) -> list[dict]:
    """The jobs `snakemake --dry-run` plans for params.yaml in `root`, from its printed job blocks:
    [{"rule", "input": [...], "output": [...], "shell"}] (the `all` rule left out)."""
    out = run_tool(root, "snakemake", "--dry-run", "--printshellcmds", "--configfile", "params.yaml")
    jobs, job = [], None
    for line in out.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            job = {"rule": match.group(1), "input": [], "output": [], "shell": None}
            jobs.append(job)
        elif job is not None and (match := re.fullmatch(r"    (input|output): (.*)", line)):
            job[match.group(1)] = match.group(2).split(", ")
        elif job is not None and line.startswith("Shell command: "):
            job["shell"], job = line.removeprefix("Shell command: "), None
    return [job for job in jobs if job["rule"] != "all"]


def cli_call(command: str) -> tuple[str, ...]:
    """The `actionrepro` step a rule's or stage's command runs, without launcher, threads and log:
    'torchrun ... -m actionrepro train ds 1 tsm --params params.yaml --threads 8 > log 2>&1'
    -> ('train', 'ds', '1', 'tsm'). The params file must be params.yaml (what both front doors read)."""
    words = shlex.split(command.split(" > ", 1)[0])
    if "actionrepro" not in words:
        raise ValueError(f"not an actionrepro command: {command!r}")
    words = words[words.index("actionrepro") + 1:]
    if "--threads" in words:
        words = words[:words.index("--threads")]
    at = words.index("--params") if "--params" in words else -1
    if at < 0 or words[at + 1] != "params.yaml":
        raise ValueError(f"{command!r} does not read params.yaml")
    return tuple(words[:at] + words[at + 2:])


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (2-core CI: no OpenMP spin-wait per small conv)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
