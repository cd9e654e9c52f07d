"""The contenders: how each one is installed (if it can be), configured and started on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.probes import first_answer
from benchmarks.procs import Proc, SetupError, free_port

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
VENVS = BENCH_DIR / ".venvs"
KEY = "sk-bench-1"
ALIAS = "bench-model"
UPSTREAM_MODEL = "upstream-model"


@dataclass(frozen=True)
class Setting:
    """What every contender needs to know about this run."""

    mock_url: str  # http://127.0.0.1:PORT of the mock upstream (no /v1)
    workdir: Path  # per-run temp dir for generated configs
    gateway_cpus: str | None  # taskset list for the gateway under test
    all_cpus: str | None  # taskset list for multi-worker runs
    install: bool  # may the harness install LiteLLM / Portkey into benchmarks/.venvs
    install_timeout_s: float
    log: Callable[[str], None]


@dataclass
class Running:
    """A started contender: where to send requests and what to measure."""

    name: str
    base_url: str
    headers: dict[str, str]
    model: str
    proc: Proc | None
    startup_s: float | None
    note: str = ""
    config: Path | None = None  # the routing table, for the hot-reload figure
    render: Callable[[str], str] | None = None  # routing table text for a given upstream model
    extra: dict[str, object] = field(default_factory=dict)
    first_body: str = ""  # the first proxied answer, to check what reached the upstream
    companions: list[Proc] = field(default_factory=list)  # what it needs, e.g. a redis-server

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()
        for companion in self.companions:
            await companion.stop()


Starter = Callable[[Setting], Awaitable[Running]]


async def _started(
    name: str,
    s: Setting,
    cmd: list[str],
    *,
    cpus: str | None,
    headers: dict[str, str],
    model: str,
    listen_line: str | None = None,
    base_url: str | None = None,
    env: dict[str, str | None] | None = None,
    startup_timeout: float = 20.0,
    note: str = "",
    cwd: Path = REPO_ROOT,
) -> Running:
    """Spawn, find the URL (listening line or known port), wait for the first proxied answer."""
    began = time.perf_counter()
    # cwd matters for `python -m`: the current directory comes first on sys.path.
    proc = await Proc.spawn(name, cmd, cpus=cpus, env=env, cwd=str(cwd))
    try:
        if listen_line is not None:
            base_url = await proc.wait_url(listen_line, startup_timeout)
        assert base_url is not None
        answered, first_body = await first_answer(base_url, headers, model, proc, startup_timeout)
    except BaseException:
        await proc.stop()
        raise
    running = Running(name, base_url, headers, model, proc, answered - began, note=note)
    running.first_body = first_body
    return running


async def direct(s: Setting) -> Running:
    return Running(
        "direct", s.mock_url, {"Authorization": f"Bearer {KEY}"}, UPSTREAM_MODEL, None, None
    )


async def floor(s: Setting) -> Running:
    cmd = [sys.executable, str(BENCH_DIR / "floor.py"), "--upstream", s.mock_url]
    headers = {"Authorization": f"Bearer {KEY}"}
    return await _started(
        "floor",
        s,
        cmd,
        cpus=s.gateway_cpus,
        headers=headers,
        model=UPSTREAM_MODEL,
        listen_line="floor listening on",
    )


# Variants of mini-llm's table, each putting one feature on the measured path.
VARIANTS = {
    "plain": "",
    # The client speaks OpenAI's format, the provider Anthropic's: both ways translated.
    "translated": "the provider speaks Anthropic's format: both ways translated",
    # Every request after the first of its kind is answered from the cache.
    "cached": "response cache on: every repeated request is a hit",
    # Every request is counted against the provider's limit in Redis (never reached).
    "redis": "a provider limit counted in a redis-server of its own (unpinned)",
}


def mini_llm_table(mock_url: str, target: str, variant: str = "plain", redis: str = "") -> str:
    if variant == "translated":
        provider = "    format: anthropic\n    auth: {style: header, header: x-api-key}\n"
    else:
        provider = "    auth: bearer\n"
    if variant == "redis":
        provider += "    limits: {rpm: 100000000}\n"
    return (
        "version: 1\n"
        "server: {reload: true}\n"
        + ("cache: {enabled: true}\n" if variant == "cached" else "")
        + (f"state: {{redis: {redis}}}\n" if redis else "")
        + "providers:\n"
        "  mock:\n"
        f"    base_url: {mock_url}/v1\n"
        f"{provider}"
        f"    keys: [{KEY}, sk-bench-2]\n"
        "routes:\n"
        "  aliases:\n"
        f"    {ALIAS}: mock:{target}\n"
    )


def mini_llm(
    workers: int, src: Path | None = None, loop: str = "asyncio", variant: str = "plain"
) -> Starter:
    """mini-llm from this checkout, or from another source tree `src` (A/B of a hot-path fix).

    `loop`: "asyncio" serves on asyncio's own loop even where uvloop is installed (a module
    named uvloop that fails to import comes first on the path, workers included); "uvloop"
    on uvloop, as `pip install 'mini-llm[fast]'` does. `variant`: one of VARIANTS.
    """
    root = src or REPO_ROOT
    name = ("mini-llm" if workers == 1 else f"mini-llm-w{workers}") + ("-alt" if src else "")
    name += "-uvloop" if loop == "uvloop" else ""
    name += "" if variant == "plain" else f"-{variant}"

    async def start(s: Setting) -> Running:
        redis, redis_url = await _redis_server() if variant == "redis" else (None, "")
        try:
            running = await _start(s, redis_url)
        except BaseException:
            if redis is not None:
                await redis.stop()
            raise
        if redis is not None:
            running.companions.append(redis)
        return running

    async def _start(s: Setting, redis_url: str) -> Running:
        config = s.workdir / name / "mini-llm.yaml"
        _write(config, mini_llm_table(s.mock_url, UPSTREAM_MODEL, variant, redis_url))
        cmd = [sys.executable, "-m", "mini_llm", "serve", "-c", str(config), "--port", "0"]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        path = [str(root), os.environ.get("PYTHONPATH")]
        if loop == "uvloop":
            if importlib.util.find_spec("uvloop") is None:
                raise SetupError("uvloop is not installed: pip install 'mini-llm[fast]'")
        else:
            blocked = s.workdir / "no-uvloop"
            _write(blocked / "uvloop.py", 'raise ImportError("left out by the benchmark")\n')
            path.insert(0, str(blocked))
        # The client's own key is dropped by the gateway; sending one keeps the path realistic.
        headers = {"Authorization": "Bearer sk-client-key"}
        # Overrides from the developer's shell must not change what is measured.
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MINI_LLM")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
        cpus = s.gateway_cpus if workers == 1 else s.all_cpus
        notes = [f"on {loop}"] + ([VARIANTS[variant]] if VARIANTS[variant] else [])
        if workers > 1:
            notes.append(f"{workers} workers on cores {cpus or 'any'} (shared with load + mock)")
        if src is not None:
            notes.append(f"source: {src}")
        running = await _started(
            name,
            s,
            cmd,
            cpus=cpus,
            headers=headers,
            model=ALIAS,
            listen_line="mini-llm listening on",
            env=env,
            cwd=root,
            note="; ".join(notes),
        )
        # The mock echoes the model it was sent: proof that the alias rewrite is on the path.
        # A translated answer names the model the client asked for; its id is the one the
        # mock gives Anthropic answers: proof that the request went there.
        translated = variant == "translated"
        proof = '"id": "msg_mock"' if translated else f'"model":"{UPSTREAM_MODEL}"'
        if proof not in running.first_body:
            await running.stop()
            raise SetupError(f"{name} did not reach the upstream model: {running.first_body[:200]}")
        running.config = config
        running.render = lambda target: mini_llm_table(s.mock_url, target, variant, redis_url)
        return running

    return start


async def _redis_server() -> tuple[Proc, str]:
    """A redis-server of the run's own on a free port, and its URL, once it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SetupError("redis-server not found (apt-get install -y redis-server)")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = await Proc.spawn("redis", cmd, cpus=None)
    deadline = time.monotonic() + 10
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\r\n")
            pong = await reader.readline()
            writer.close()
            if pong.startswith(b"+PONG"):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if time.monotonic() > deadline:
            await proc.stop()
            raise SetupError(f"redis-server did not answer within 10 s; {proc.tail()}")
        await asyncio.sleep(0.05)


def _nginx_conf(prefix: Path, port: int, mock_url: str) -> str:
    upstream = mock_url.removeprefix("http://")
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream mock {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {KEY}";
      proxy_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""


async def nginx(s: Setting) -> Running:
    # Debian puts nginx in /usr/sbin, which is not on every user's PATH.
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        raise SetupError("nginx not found (apt-get install -y nginx)")
    prefix = s.workdir / "nginx"
    port = free_port()
    conf = prefix / "nginx.conf"
    _write(conf, _nginx_conf(prefix, port, s.mock_url))
    cmd = [binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
    return await _started(
        "nginx",
        s,
        cmd,
        cpus=s.gateway_cpus,
        headers={},
        model=UPSTREAM_MODEL,
        base_url=f"http://127.0.0.1:{port}",
        note="1 worker, keepalive upstream, proxy_buffering off",
    )


async def _install(s: Setting, name: str, steps: list[list[str]], marker: Path) -> None:
    """Run install steps once; the marker says a previous run completed them."""
    if _is_file(marker):
        return
    if not s.install:
        raise SetupError(
            f"not installed (run without --no-install to install into {marker.parent})"
        )
    s.log(f"installing {name} into {marker.parent} (one-time, up to {s.install_timeout_s:.0f}s)...")
    deadline = time.monotonic() + s.install_timeout_s
    _mkdir(marker.parent)
    for cmd in steps:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(marker.parent),
        )
        try:
            out, _ = await asyncio.wait_for(
                proc.communicate(), max(1.0, deadline - time.monotonic())
            )
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise SetupError(f"{name} install timed out after {s.install_timeout_s:.0f}s") from None
        if proc.returncode != 0:
            tail = " | ".join(out.decode(errors="replace").strip().splitlines()[-2:])[-300:]
            raise SetupError(f"{name} install failed: {tail}")
    _write(marker, time.strftime("%Y-%m-%dT%H:%M:%S\n"))


async def litellm(s: Setting) -> Running:
    venv = VENVS / "litellm"
    pip = str(venv / "bin" / "pip")
    steps = [[sys.executable, "-m", "venv", str(venv)], [pip, "install", "-q", "litellm[proxy]"]]
    await _install(s, "litellm[proxy]", steps, venv / ".installed")
    config = s.workdir / "litellm.yaml"
    params = {"model": f"openai/{UPSTREAM_MODEL}", "api_base": f"{s.mock_url}/v1", "api_key": KEY}
    # JSON is YAML; one worker, no database, no callbacks: the cheapest LiteLLM there is.
    _write(config, json.dumps({"model_list": [{"model_name": ALIAS, "litellm_params": params}]}))
    port = free_port()
    master = f"sk-bench-{secrets.token_hex(16)}"
    cmd = [
        str(venv / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cmd += ["--num_workers", "1"]
    env: dict[str, str | None] = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from GitHub
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "DATABASE_URL": None,  # no database: the proxy's lightest mode
        # LiteLLM refuses to start without a master key; clients then present it.
        "LITELLM_MASTER_KEY": master,
    }
    return await _started(
        "litellm",
        s,
        cmd,
        cpus=s.gateway_cpus,
        headers={"Authorization": f"Bearer {master}"},
        model=ALIAS,
        base_url=f"http://127.0.0.1:{port}",
        env=env,
        startup_timeout=180.0,
        note=f"litellm[proxy] {_litellm_version(venv)}, 1 worker, no database",
    )


async def portkey(s: Setting) -> Running:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        raise SetupError("node not found (Portkey's gateway is a Node.js program)")
    root = VENVS / "portkey"
    if npm is None and not _is_file(root / ".installed"):
        raise SetupError("npm not found to install @portkey-ai/gateway")
    steps = [
        [
            npm or "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(root),
            "@portkey-ai/gateway",
        ]
    ]
    await _install(s, "@portkey-ai/gateway", steps, root / ".installed")
    script = root / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not _is_file(script):
        raise SetupError(f"{script} missing after install")
    port = free_port()
    # Portkey routes by a config header; override_params gives it the same alias rewrite.
    config = {
        "provider": "openai",
        "api_key": KEY,
        "custom_host": f"{s.mock_url}/v1",
        "override_params": {"model": UPSTREAM_MODEL},
    }
    headers = {"x-portkey-config": json.dumps(config, separators=(",", ":"))}
    return await _started(
        "portkey",
        s,
        [node, str(script), f"--port={port}", "--headless"],
        cpus=s.gateway_cpus,
        headers=headers,
        model=ALIAS,
        base_url=f"http://127.0.0.1:{port}",
        env={"NODE_ENV": "production"},
        startup_timeout=60.0,
        note=f"@portkey-ai/gateway {_package_version(script)} on node {_node_version(node)}",
    )


def _node_version(node: str) -> str:
    done = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout.strip() or "?"


def _litellm_version(venv: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout.strip() or "?"


def _package_version(script: Path) -> str:
    try:
        return str(json.loads((script.parent.parent / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


# Small synchronous file helpers: a few bytes once per contender, not worth a thread.
def _is_file(path: Path) -> bool:
    return path.is_file()


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _write(path: Path, text: str) -> None:
    _mkdir(path.parent)
    path.write_text(text)


def registry(workers: int, alt_src: Path | None = None) -> dict[str, Starter]:
    """All contenders in run order; direct and floor first, they are the references."""
    starters: dict[str, Starter] = {"direct": direct, "floor": floor, "mini-llm": mini_llm(1)}
    starters["mini-llm-uvloop"] = mini_llm(1, loop="uvloop")
    if alt_src is not None:
        starters["mini-llm-alt"] = mini_llm(1, alt_src)
    if workers > 1:
        starters[f"mini-llm-w{workers}"] = mini_llm(workers)
    for variant in VARIANTS:
        if variant != "plain":
            starters[f"mini-llm-{variant}"] = mini_llm(1, variant=variant)
    starters.update({"nginx": nginx, "litellm": litellm, "portkey": portkey})
    return starters
