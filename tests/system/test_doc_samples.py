"""Every Python and shell sample in README.md and docs/*.md runs here, so none can rot.

Samples run in file order against this test's own real processes: the session's redis-server (flushed
before each file) and an `arqscale api` on a free port, with `localhost:8000` in a sample pointing at
it. Python samples run with top-level await; shell samples run command by command with `arqscale` on
PATH, and each must exit 0. Documented output is compared with the real one: `# NNN {json}` after a
command is its status and exact body; in a `console` block, JSON after a `$ command` must have the
real answer's fields (the exact body for an enqueue).

A sample that cannot run here (a Kubernetes cluster, minutes of benchmark, a server that runs until
stopped) is preceded by `<!-- not run by tests/system/test_doc_samples.py: REASON -->`, and is still
checked: every `make` target, repository path and script option it names must exist.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from arqscale.core.pickle_peek import looks_pickled
from redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python", "bash", "sh", "console"}
NOT_RUN = re.compile(r"<!-- not run by tests/system/test_doc_samples\.py: (?P<reason>[^>]*\S) -->")
REASONS = {
    "needs a Kubernetes cluster",
    "runs for minutes",
    "starts servers that run until stopped",
    "follows a live stream until stopped",
    "the README's own set-up commands (make test is what CI runs)",
}


@dataclass(frozen=True)
class Sample:
    file: Path
    line: int
    lang: str
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def samples(path: Path) -> list[Sample]:
    found = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)", lines[i])
        if fence is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        lang = fence.group(1)
        if lang in RUNNABLE:
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.fullmatch(before.strip())
            code = "\n".join(lines[i + 1 : end]) + "\n"
            found.append(Sample(path, i + 1, lang, code, marker.group("reason") if marker else None))
        i = end + 1
    return found


ALL = [s for path in FILES for s in samples(path)]


def test_the_docs_have_samples_and_most_run() -> None:
    assert len(ALL) >= 20
    run = [s for s in ALL if s.not_run is None]
    assert {s.lang for s in run} >= {"python", "bash", "console"} and len(run) >= 6, [s.name for s in run]


# ---- samples that do not run: a known reason, and what they name exists ----------------------------


def commands(code: str) -> list[str]:
    """Shell commands of a sample: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    in_heredoc = None
    for line in joined.splitlines():
        if in_heredoc is not None:
            if line.strip() == in_heredoc:
                in_heredoc = None
            continue
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:]
        if not text or text.startswith("#"):
            continue
        heredoc = re.search(r"<<'?(\w+)'?", text)
        if heredoc:
            in_heredoc = heredoc.group(1)
        out.append(text)
    return out


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.M))


def script_help(script: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("sample", [s for s in ALL if s.not_run is not None], ids=lambda s: s.name)
def test_a_sample_that_does_not_run_says_why_and_names_what_exists(sample: Sample) -> None:
    assert sample.not_run in REASONS, f"{sample.name}: unknown reason {sample.not_run!r}"
    cmds = commands(sample.code)
    assert cmds
    if sample.not_run == "needs a Kubernetes cluster":
        assert any(re.match(r"(make kind-|kubectl|helm|kind|docker)\b", c) for c in cmds), cmds
    for cmd in cmds:
        for target in re.findall(r"\bmake ([a-z][\w-]*)", cmd):
            assert target in make_targets(), f"{sample.name}: no make target {target}"
        for path in re.findall(r"(?<![\w/.-])((?:helm|k8s|bench|docs|scripts)/[\w./-]+|Dockerfile[\w.]*)", cmd):
            if "my-" not in path:
                assert (ROOT / path.rstrip("/")).exists(), f"{sample.name}: no {path}"
        script = re.match(r"python3? (bench/\w+\.py)(.*)", cmd)
        if script:
            help_text = script_help(script.group(1))
            for option in re.findall(r"(?<!\S)(--[\w-]+)", script.group(2)):
                assert option in help_text, f"{sample.name}: {script.group(1)} has no {option}"


# ---- samples that run ----------------------------------------------------------------------------


@pytest.fixture
def stack(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment a sample runs in: the test Redis, the demo queues, an `arqscale api` on a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQSCALE_"))}
    env |= {"REDIS_URL": redis_server.url, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "arqscale", "api", "--port", str(port)],
        env=env | {"ARQSCALE_API_HOST": "127.0.0.1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert api.poll() is None and time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.1)
        yield env | {"API": f"127.0.0.1:{port}", "CWD": str(tmp_path)}
    finally:
        api.terminate()
        api.wait(15)
        log.close()


def on_the_test_api(text: str, env: dict[str, str]) -> str:
    return text.replace("localhost:8000", env["API"])


def run_shell(sample: Sample, cmd: str, env: dict[str, str]) -> str:
    shell_env = {k: v for k, v in env.items() if k not in {"API", "CWD"}}
    out = subprocess.run(
        ["bash", "-c", on_the_test_api(cmd, env)],
        cwd=env["CWD"],
        env=shell_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"{sample.name}: `{cmd}` exited {out.returncode}:\n{out.stdout}{out.stderr}"
    return out.stdout


def check_shell(sample: Sample, env: dict[str, str]) -> None:
    """bash/sh: each command exits 0; a `# NNN {json}` line right after one is its status and exact body."""
    joined = re.sub(r"\\\n\s*", " ", sample.code).splitlines()
    for i, line in enumerate(joined):
        cmd = line.strip()
        if not cmd or cmd.startswith("#"):
            continue
        following = joined[i + 1].strip() if i + 1 < len(joined) else ""
        expected = re.fullmatch(r"# (\d{3}) (\{.*\})", following)
        if expected is None:
            run_shell(sample, cmd, env)
            continue
        assert cmd.startswith("curl "), f"{sample.name}: a documented answer after {cmd!r}"
        out = run_shell(sample, cmd + " -s -w '\\n%{http_code}'", env)
        body, status = out.rsplit("\n", 1)
        assert status == expected.group(1), f"{sample.name}: {cmd}: status {status}, documented {expected.group(1)}"
        documented = json.loads(expected.group(2))
        assert json.loads(body) == documented, f"{sample.name}: documented {documented}, real {body}"


def same_fields(real: Any, doc: Any) -> bool:
    """Same keys all the way down (the first element of lists that both have)."""
    if isinstance(real, dict) and isinstance(doc, dict):
        return set(real) == set(doc) and all(same_fields(real[k], doc[k]) for k in real)
    if isinstance(real, list) and isinstance(doc, list) and real and doc:
        return same_fields(real[0], doc[0])
    return True


def check_console(sample: Sample, env: dict[str, str]) -> None:
    """`$ command` lines run; JSON shown after one has the real answer's fields (an enqueue's, exactly)."""
    blocks = re.split(r"^\$ ", sample.code, flags=re.M)[1:]
    for block in blocks:
        lines = block.splitlines()
        cmd_lines = [lines[0]]
        while cmd_lines[-1].endswith("\\"):
            cmd_lines.append(lines[len(cmd_lines)])
        cmd = " ".join(line.rstrip("\\").strip() for line in cmd_lines)
        shown = "".join(line.strip() for line in lines[len(cmd_lines) :])
        out = run_shell(sample, cmd, env)
        if shown.startswith("{"):
            doc, real = json.loads(shown), json.loads(out)
            if " -X POST " in cmd:
                assert real == doc, f"{sample.name}: documented {doc}, real {real}"
            assert same_fields(real, doc), f"{sample.name}: documented fields {doc}, real {real}"


async def check_python(sample: Sample, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name in [n for n in os.environ if n.startswith(("REDIS_", "ARQSCALE_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(("REDIS_", "ARQSCALE_")):
            monkeypatch.setenv(name, value)
    code = compile(sample.code, sample.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {}
    result = eval(code, namespace)  # the sample is this repository's own text
    if asyncio.iscoroutine(result):
        await result
    return namespace


async def close_clients(namespace: dict[str, Any]) -> None:
    for value in namespace.values():
        client = getattr(value, "redis", value)
        if isinstance(client, Redis):
            await client.aclose()


@pytest.mark.parametrize(
    "path", sorted({s.file for s in ALL if s.not_run is None}), ids=lambda p: str(p.relative_to(ROOT))
)
async def test_the_samples_of_a_file_run(
    path: Path, stack: dict[str, str], redis: Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    await redis.flushall()
    for sample in [s for s in samples(path) if s.not_run is None]:
        if sample.lang == "python":
            namespace = await check_python(sample, stack, monkeypatch)
            await close_clients(namespace)
        elif sample.lang == "console":
            await asyncio.to_thread(check_console, sample, stack)
        else:
            await asyncio.to_thread(check_shell, sample, stack)


async def test_the_readme_producer_enqueues_onto_the_configured_queues(
    stack: dict[str, str], redis: Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The bug of issue 9: the example loaded the demo queues whatever ARQSCALE_QUEUES_FILE said, so its
    # JSON job went dead on the user's pickle queue. Run it against a user's file with a pickle queue.
    sample = next(s for s in samples(ROOT / "README.md") if "Producer(" in s.code)
    queues = tmp_path / "queues.yaml"
    queues.write_text("queues:\n  email:\n    functions: [myapp.tasks.send_email]\n    serializer: pickle\n")
    namespace = await check_python(sample, stack | {"ARQSCALE_QUEUES_FILE": str(queues)}, monkeypatch)
    await close_clients(namespace)
    payload = await redis.get("arq:job:signup-7")
    assert payload is not None and looks_pickled(payload)  # in the format that queue's workers read
