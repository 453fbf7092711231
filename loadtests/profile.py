"""``make profile``: sample one service worker with py-spy while the load generator keeps it busy.

Starts the service with ``WORKERS=1`` (embedded model, or ``--mode llm`` through the fake LLM), runs the
closed-loop load generator at ``--concurrency`` streams on ``--model``, and records the worker twice with
py-spy (on-CPU samples only): a flame graph (``flamegraph.svg``, open it in a browser) and raw collapsed
stacks (``stacks.txt``), from which it prints where the CPU goes: top functions by own time, by inclusive
time, and own time per package (autogen_core, starlette, logging, json, ...).

If py-spy cannot attach (no ptrace permission), run as root or with ``--cap-add SYS_PTRACE``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from loadtests.bench import BenchConfig, _service_env, probe
from loadtests.procs import REPO_ROOT, ServerProcess, spawn_service, start_fake_llm, venv_bin, wait_ready

# entry points and the event loop: on every stack, so they say nothing in the inclusive table
_PLUMBING = {
    "gunicorn",
    "uvicorn_worker",
    "stdlib:asyncio",
    "stdlib:runpy",
    "<frozen runpy>",
    "stdlib:threading",
}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def package_of(path: str) -> str:
    """A readable owner for a source path: the site-packages package, stdlib module, or project folder."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    m = re.search(r"lib/python3\.\d+/(.+)$", path)
    if m:
        return "stdlib:" + m.group(1).split("/", 1)[0].removesuffix(".py")
    for root in ("service", "loadtests"):
        if path.startswith(root + "/") or f"/{root}/" in path:
            return root
    return path or "?"


def analyse(stacks_file: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in stacks_file.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        leaf = frames[-1]
        own[leaf] += count
        m = _FRAME.match(leaf)
        packages[package_of(m.group("file")) if m else "?"] += count
        for frame in set(frames):
            fm = _FRAME.match(frame)
            if fm is None or package_of(fm.group("file")) not in _PLUMBING:
                inclusive[frame] += count
    if total == 0:
        return "no samples (was the worker busy? could py-spy attach?)"

    def table(title: str, counter: Counter[str]) -> list[str]:
        out = [f"\n{title}", f"{'share':>7}  frame"]
        for frame, count in counter.most_common(top):
            out.append(f"{100.0 * count / total:6.1f}%  {frame[:150]}")
        return out

    lines = [f"{total} on-CPU samples"]
    lines += table("own time by package", packages)
    lines += table("own time by function", own)
    lines += table("inclusive time by function (event loop and server entry frames left out)", inclusive)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo-team")
    p.add_argument("--mode", choices=["embedded", "llm"], default="embedded")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=15.0, help="seconds of each py-spy recording")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--token-ms", type=float, default=5.0)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--out", default="reports")
    a = p.parse_args(argv)

    pyspy = venv_bin("py-spy")
    if not Path(pyspy).exists():
        pyspy = shutil.which("py-spy") or ""
    if not pyspy:
        sys.exit("py-spy is not installed (pip install py-spy)")
    out = Path(a.out)
    if not out.is_absolute():
        out = REPO_ROOT / out
    folder = out / f"profile-{time.strftime('%Y%m%d-%H%M%S')}-{a.mode}-{a.model}-{a.concurrency}"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = BenchConfig(ttft_ms=a.ttft_ms, token_ms=a.token_ms, tokens=a.tokens)
    servers: list[ServerProcess] = []
    load: subprocess.Popen[bytes] | None = None
    try:
        llm_url = None
        if a.mode == "llm":
            fake = start_fake_llm(
                log_path=folder / "fake-llm.log",
                ttft_ms=a.ttft_ms,
                token_ms=a.token_ms,
                tokens=a.tokens,
                terminate_turn=3,
            )
            servers.append(fake)
            llm_url = f"{fake.url}/v1"
        svc = wait_ready(spawn_service("service", _service_env(cfg, llm_url), 1, folder / "service.log"))
        servers.append(svc)
        probe(svc, a.model, cfg.prompt, {}, n=3)
        worker = svc.workers()[0]
        load_s = 2 * a.duration + 4
        print(
            f"profile: worker pid {worker}, {a.concurrency} streams of {a.model} ({a.mode}) for {load_s:g} s"
        )
        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadtests.loadgen",
                "--url",
                svc.url,
                "--model",
                a.model,
                "--prompt",
                cfg.prompt,
                "--concurrency",
                str(a.concurrency),
                "--duration",
                str(load_s),
                "--output",
                str(folder / "loadgen.json"),
            ],
            cwd=str(REPO_ROOT),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(2.0)  # ramp-up
        common = ["record", "--pid", str(worker), "--duration", str(int(a.duration)), "--rate", str(a.rate)]
        for fmt, name, extra in (
            ("flamegraph", "flamegraph.svg", []),
            ("raw", "stacks.txt", ["--full-filenames"]),
        ):
            res = subprocess.run(
                [pyspy, *common, *extra, "--format", fmt, "--output", str(folder / name), "--nonblocking"],
                capture_output=True,
                timeout=a.duration + 60,
                check=False,
            )
            if res.returncode != 0:
                sys.exit(f"py-spy failed: {res.stderr.decode(errors='replace')[-1500:]}")
        load.wait(timeout=load_s + 180)
    finally:
        if load is not None and load.poll() is None:
            load.terminate()
            load.wait(10)
        for server in reversed(servers):
            server.stop()
    report = analyse(folder / "stacks.txt")
    (folder / "top.txt").write_text(report + "\n")
    print(report)
    lg_file = folder / "loadgen.json"
    if lg_file.exists():
        lg = json.loads(lg_file.read_text())
        print(
            f"\nload: {lg['completed']} streams, {lg['failed']} errors, {lg['streams_per_s']:.1f}/s, "
            f"ttft p50 {lg['ttft_ms']['p50']} ms"
        )
    print(f"\nprofile: {folder}/flamegraph.svg, stacks.txt, top.txt")


if __name__ == "__main__":
    main()
