#!/usr/bin/env python3
"""Runs every fenced code block of README.md, for real (tests/run_all.sh).

Every fenced block must be preceded (previous non-blank line) by an HTML
comment, invisible on GitHub, that says what to do with it:

  <!-- readme-test: doctest -->          ```rust: a doctest of the tidelog crate
                                         (core/src/lib.rs includes README.md under
                                         cfg(doctest)); run by `cargo test --doc`
  <!-- readme-test: sh -->               ```sh: run with bash at the repository root
  <!-- readme-test: python-install -->   ```sh: run at the root with a fresh,
                                         activated venv (the "active environment")
  <!-- readme-test: python -->           ```python: run with that venv's python in an
                                         empty directory
  <!-- readme-test: node-with-cloud -->  ```js: saved as app.mjs in an empty directory
                                         whose node_modules/tidelog is bindings/node,
                                         with pki/ from `tidelog certs --out pki cloud
                                         edge-1` and a real cloud running: `tidelog
                                         serve` with the serve-config block as config
  <!-- readme-test: serve-config -->     ```toml: the config of that cloud; SIGTERM at
                                         the end must give exit status 0
  <!-- readme-test: story [file=NAME] [expect="TEXT"] -->
                                         the newcomer walk-through: all story blocks,
                                         in README order, as ONE bash script started at
                                         the root (file=NAME blocks are written to NAME
                                         at that point); its output must contain TEXT
  <!-- readme-test: skip: REASON -->     not run, for the stated reason

A block without such a comment, or with an unknown one, fails the run. So
does any failing block: the report names it and its README line.

The only changes made to the blocks before running them (SUBSTITUTIONS
below, also stated in README.md):
  - "127.0.0.1:7000" becomes 127.0.0.1 and a free port;
  - if CARGO_TARGET_DIR is set (to something else than ./target),
    "$PWD/target/" and "target/" in shell blocks become "$CARGO_TARGET_DIR/".

Before the blocks run, the runner builds the `tidelog` binary (cargo build
-p tidelog, debug) for the cloud of the node-with-cloud block. Only
127.0.0.1 is ever used. Python 3 standard library only.

    python3 tests/readme/run_readme.py            # everything
    python3 tests/readme/run_readme.py --list     # how each block is classified
    python3 tests/readme/run_readme.py --only story,python
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LIB_RS = ROOT / "core" / "src" / "lib.rs"
DEFAULT_TARGET = ROOT / "target"
TARGET = Path(os.environ["CARGO_TARGET_DIR"]).resolve() if os.environ.get("CARGO_TARGET_DIR") else DEFAULT_TARGET
TIDELOG = TARGET / "debug" / "tidelog"
# The doctests run in the crate's directory (cargo passes
# --test-run-directory core/), so the Rust quick start's relative data
# directory lands here; it is removed before and after.
DOCTEST_LEFTOVERS = [ROOT / "core" / "gateway-db"]

ANNOTATION = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(```+)\s*([^`]*)$")

# kind -> the fence languages it accepts
KINDS = {
    "doctest": {"rust"},
    "sh": {"sh"},
    "python-install": {"sh"},
    "python": {"python"},
    "node-with-cloud": {"js"},
    "serve-config": {"toml"},
    "story": {"sh", "toml", "python", "js"},
    "skip": None,  # any
}
BUILD_TIMEOUT = 1800  # blocks that may compile (cold release builds on 2 busy cores)
RUN_TIMEOUT = 180


@dataclass
class Block:
    line: int  # 1-based line of the opening fence in README.md
    lang: str
    text: str
    kind: str = ""
    reason: str = ""
    opts: Dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.lang or 'no language'} block, {self.kind or 'unclassified'})"


class Failure(Exception):
    pass


# ---- parsing ----------------------------------------------------------------


def parse_readme(text: str) -> List[Block]:
    """Fenced blocks with their annotations; raises Failure listing every
    block that is neither run nor classified."""
    lines = text.split("\n")
    blocks: List[Block] = []
    problems: List[str] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).strip()
        start = i
        j = i + 1
        while j < len(lines) and not re.match(rf"^{fence}\s*$", lines[j]):
            j += 1
        if j == len(lines):
            raise Failure(f"README.md:{start + 1}: fenced block never closed")
        b = Block(line=start + 1, lang=info.split()[0] if info else "", text="\n".join(lines[start + 1 : j]) + "\n")
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        a = ANNOTATION.match(lines[k]) if k >= 0 else None
        if not a:
            problems.append(
                f"README.md:{b.line}: a ```{b.lang} block that is neither run nor classified: put "
                "<!-- readme-test: KIND --> on the line before it (see tests/readme/run_readme.py)"
            )
        else:
            try:
                classify(b, a.group(1))
            except Failure as e:
                problems.append(f"README.md:{b.line}: {e}")
        blocks.append(b)
        i = j + 1
    if problems:
        raise Failure("\n".join(problems))
    return blocks


def classify(b: Block, spec: str) -> None:
    if spec.startswith("skip"):
        reason = spec[len("skip") :].lstrip(":").strip()
        if not reason:
            raise Failure("`skip` needs a reason: <!-- readme-test: skip: WHY -->")
        b.kind, b.reason = "skip", reason
        return
    words = shlex.split(spec)
    if not words or words[0] not in KINDS:
        raise Failure(f"unknown readme-test kind {spec!r}; known: {', '.join(KINDS)}")
    b.kind = words[0]
    for w in words[1:]:
        key, eq, value = w.partition("=")
        if not eq or key not in ("file", "expect") or b.kind != "story":
            raise Failure(f"unknown option {w!r} for {b.kind}")
        b.opts[key] = value
    langs = KINDS[b.kind]
    if langs is not None and b.lang not in langs:
        raise Failure(f"a `{b.kind}` block must be ```{' or ```'.join(sorted(langs))}, not ```{b.lang}")
    if b.kind == "story" and b.lang != "sh" and "file" not in b.opts:
        raise Failure("a story block that is not ```sh needs file=NAME (the file the reader saves it as)")


# ---- substitutions (the only changes made to a block before it runs) --------


def substitute(text: str, port: int, shell: bool) -> str:
    out = text.replace("127.0.0.1:7000", f"127.0.0.1:{port}")
    if shell and TARGET != DEFAULT_TARGET:
        out = out.replace("$PWD/target/", "$CARGO_TARGET_DIR/")
        out = re.sub(r"(?<![\w./$-])target/", "$CARGO_TARGET_DIR/", out)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- running ----------------------------------------------------------------


def run(cmd: List[str], *, cwd: Path, env: Optional[Dict[str, str]] = None, timeout: float, log: Path) -> str:
    """Runs cmd with stdout+stderr into log; returns the output; raises Failure."""
    with open(log, "wb") as f:
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            raise Failure(f"timed out after {timeout:.0f} s: {' '.join(cmd)}\n{tail(log)}")
    out = log.read_text(errors="replace")
    if rc != 0:
        raise Failure(f"exit status {rc}: {' '.join(cmd)}\n{tail(log)}")
    return out


def kill_group(p: "subprocess.Popen[bytes]") -> None:
    # The block's own process group (start_new_session): it and whatever it
    # started in the background, nothing else.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def tail(log: Path, n: int = 40) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join("    | " + line for line in lines[-n:])


def base_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    return env


class Runner:
    def __init__(self, blocks: List[Block], scratch: Path) -> None:
        self.blocks = blocks
        self.scratch = scratch
        self.port = free_port()
        self.venv: Optional[Path] = None  # made by the python-install block
        self.results: List[tuple] = []

    def of(self, kind: str) -> List[Block]:
        return [b for b in self.blocks if b.kind == kind]

    def dir(self, name: str) -> Path:
        d = self.scratch / name
        d.mkdir(parents=True)
        return d

    def attempt(self, blocks: List[Block], what: str, fn) -> None:
        t0 = time.monotonic()
        try:
            fn()
            status, detail = "ok", ""
        except Failure as e:
            status, detail = "FAILED", str(e)
        secs = time.monotonic() - t0
        for b in blocks:
            self.results.append((status, b, what, secs, detail))
        where = ", ".join(f"README.md:{b.line}" for b in blocks)
        print(f"  {status:6} {where}: {what} ({secs:.1f} s)", flush=True)
        if detail:
            print(detail, flush=True)

    # -- kinds --

    def doctests(self) -> None:
        blocks = self.of("doctest")
        if not blocks:
            return

        def go() -> None:
            offset = doc_offset()
            for d in DOCTEST_LEFTOVERS:
                shutil.rmtree(d, ignore_errors=True)
            try:
                out = run(
                    ["cargo", "test", "--doc", "-p", "tidelog", "--", "ReadmeDoctests"],
                    cwd=ROOT,
                    env=base_env(),
                    timeout=BUILD_TIMEOUT,
                    log=self.scratch / "doctests.log",
                )
            finally:
                for d in DOCTEST_LEFTOVERS:
                    shutil.rmtree(d, ignore_errors=True)
            passed = {int(m.group(1)) - offset for m in re.finditer(r"ReadmeDoctests \(line (\d+)\) \.\.\. ok", out)}
            missing = [b.line for b in blocks if b.line not in passed]
            if missing or re.search(r"ReadmeDoctests \(line \d+\) - compile", out):
                raise Failure(
                    f"cargo test --doc did not run and pass the README's rust blocks at lines {missing} "
                    f"(passed: {sorted(passed)}; no_run/ignore are not allowed)\n{tail(self.scratch / 'doctests.log')}"
                )

        self.attempt(blocks, "cargo test --doc -p tidelog (README doctests)", go)

    def shell_blocks(self) -> None:
        for i, b in enumerate(self.of("sh")):

            def go(b: Block = b, i: int = i) -> None:
                script = self.scratch / f"sh-{b.line}.sh"
                script.write_text("set -euo pipefail\n" + substitute(b.text, self.port, shell=True))
                run(["bash", str(script)], cwd=ROOT, env=base_env(), timeout=BUILD_TIMEOUT, log=self.scratch / f"sh-{b.line}.log")

            self.attempt([b], "bash at the repository root", go)

    def python(self) -> None:
        installs = self.of("python-install")
        for b in installs:

            def go(b: Block = b) -> None:
                venv = self.scratch / "venv"
                run([sys.executable, "-m", "venv", str(venv)], cwd=ROOT, timeout=RUN_TIMEOUT, log=self.scratch / "venv.log")
                env = base_env()
                env["VIRTUAL_ENV"] = str(venv)
                env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
                script = self.scratch / f"sh-{b.line}.sh"
                script.write_text("set -euo pipefail\n" + substitute(b.text, self.port, shell=True))
                run(["bash", str(script)], cwd=ROOT, env=env, timeout=BUILD_TIMEOUT, log=self.scratch / f"sh-{b.line}.log")
                self.venv = venv

            self.attempt([b], "bash at the repository root, in a fresh venv", go)
        for b in self.of("python"):

            def go(b: Block = b) -> None:
                if self.venv is None:
                    raise Failure("no venv: the README's python-install block did not run or failed")
                d = self.dir(f"python-{b.line}")
                (d / "snippet.py").write_text(substitute(b.text, self.port, shell=False))
                run([str(self.venv / "bin" / "python"), "snippet.py"], cwd=d, env=base_env(), timeout=RUN_TIMEOUT, log=d / "out.log")

            self.attempt([b], "python, with the venv the README's pip install filled", go)

    def node_with_cloud(self) -> None:
        clients = self.of("node-with-cloud")
        configs = self.of("serve-config")
        if len(configs) != 1:
            if configs or clients:

                def fail() -> None:
                    raise Failure(f"expected exactly one serve-config block (the cloud), found {len(configs)}")

                self.attempt(configs + clients, "node-with-cloud/serve-config", fail)
            return
        cfg = configs[0]
        for b in clients or [None]:
            blocks = [cfg] + ([b] if b else [])

            def go(b: Optional[Block] = b) -> None:
                d = self.dir(f"node-{b.line if b else 'none'}")
                run([str(TIDELOG), "certs", "--out", "pki", "cloud", "edge-1"], cwd=d, timeout=RUN_TIMEOUT, log=d / "certs.log")
                (d / "cloud.toml").write_text(substitute(cfg.text, self.port, shell=False))
                with Cloud(d) as cloud:
                    if b is not None:
                        (d / "node_modules").mkdir()
                        (d / "node_modules" / "tidelog").symlink_to(ROOT / "bindings" / "node")
                        (d / "app.mjs").write_text(substitute(b.text, self.port, shell=False))
                        run(["node", "app.mjs"], cwd=d, env=base_env(), timeout=RUN_TIMEOUT, log=d / "app.log")
                    cloud.stop()

            what = "tidelog serve with the config" + (", node app.mjs as its edge" if b else "")
            self.attempt(blocks, what, go)

    def story(self) -> None:
        blocks = self.of("story")
        if not blocks:
            return

        def go() -> None:
            d = self.dir("story")
            parts = [
                "set -euo pipefail",
                # Whatever the story left running in the background ends with it.
                "trap 'jobs -p | xargs -r kill 2>/dev/null || true' EXIT",
                f"export TMPDIR={shlex.quote(str(d))}",
            ]
            for b in blocks:
                parts.append(f"echo '== README.md:{b.line}' >&2")
                text = substitute(b.text, self.port, shell=b.lang == "sh")
                if "file" in b.opts:
                    parts.append(f"cat > {shlex.quote(b.opts['file'])} <<'README_BLOCK_EOF'\n{text}README_BLOCK_EOF")
                else:
                    parts.append(text)
            script = d / "story.sh"
            script.write_text("\n".join(parts) + "\n")
            try:
                out = run(["bash", str(script)], cwd=ROOT, env=base_env(), timeout=BUILD_TIMEOUT, log=d / "story.log")
            except Failure as e:
                marks = re.findall(r"^== (README\.md:\d+)$", (d / "story.log").read_text(errors="replace"), re.M)
                raise Failure(f"the story failed in the block at {marks[-1] if marks else '(before the first block)'}: {e}")
            for b in blocks:
                if "expect" in b.opts and b.opts["expect"] not in out:
                    raise Failure(f"README.md:{b.line}: the output lacks {b.opts['expect']!r}\n{tail(d / 'story.log')}")

        self.attempt(blocks, "the step-by-step story, one bash script from the repository root", go)


class Cloud:
    """`tidelog serve --config cloud.toml` in directory d, until stop()."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.log = d / "cloud.log"
        self.p: Optional[subprocess.Popen[bytes]] = None

    def __enter__(self) -> "Cloud":
        self.f = open(self.log, "wb")
        self.p = subprocess.Popen([str(TIDELOG), "serve", "--config", "cloud.toml"], cwd=self.d, stdout=self.f, stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while "tidelog: ready" not in self.log.read_text(errors="replace"):
            if self.p.poll() is not None:
                raise Failure(f"tidelog serve exited with status {self.p.returncode} before it was ready\n{tail(self.log)}")
            if time.monotonic() > end:
                raise Failure(f"tidelog serve not ready after 60 s\n{tail(self.log)}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        assert self.p is not None
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise Failure(f"tidelog serve did not stop within 30 s of SIGTERM\n{tail(self.log)}")
        if rc != 0 or "stopped cleanly" not in self.log.read_text(errors="replace"):
            raise Failure(f"tidelog serve exited with status {rc} after SIGTERM (0 expected)\n{tail(self.log)}")

    def __exit__(self, *exc: object) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.f.close()


def doc_offset() -> int:
    """rustdoc numbers README lines from the line of the include_str!
    attribute in core/src/lib.rs: README line = reported line - offset."""
    for n, line in enumerate(LIB_RS.read_text().splitlines(), 1):
        if 'include_str!("../../README.md")' in line:
            return n - 1
    raise Failure("core/src/lib.rs does not include README.md as doctests")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="show how each block is classified, run nothing")
    ap.add_argument("--only", help="comma-separated kinds to run (doctest,sh,python,node,story)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    try:
        blocks = parse_readme(README.read_text())
    except Failure as e:
        print(f"README snippets: FAILED\n{e}", file=sys.stderr)
        return 1
    if args.list:
        for b in blocks:
            print(f"README.md:{b.line:<4} ```{b.lang:<7} {b.kind}{': ' + b.reason if b.reason else ''}{' ' + str(b.opts) if b.opts else ''}")
        return 0
    only = set(args.only.split(",")) if args.only else None
    t0 = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="tidelog-readme."))
    r = Runner(blocks, scratch)
    print(f"README snippets: {len(blocks)} fenced blocks; free port {r.port}; scratch {scratch}", flush=True)
    for b in blocks:
        if b.kind == "skip":
            print(f"  skip   README.md:{b.line}: {b.reason}")
    try:
        if only is None or {"node", "story"} & only:
            subprocess.run(["cargo", "build", "--quiet", "-p", "tidelog"], cwd=ROOT, check=True)
        steps = [
            ("doctest", r.doctests),
            ("sh", r.shell_blocks),  # before node: the README's npm install builds the addon
            ("python", r.python),
            ("node", r.node_with_cloud),
            ("story", r.story),
        ]
        for name, step in steps:
            if only is None or name in only:
                step()
    finally:
        failed = [x for x in r.results if x[0] != "ok"]
        if failed or args.keep:
            print(f"README snippets: scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    ran = {id(x[1]) for x in r.results}
    unrun = [b for b in blocks if b.kind != "skip" and id(b) not in ran and only is None]
    for b in unrun:
        print(f"  FAILED README.md:{b.line}: classified as {b.kind} but never run")
    secs = time.monotonic() - t0
    if failed or unrun:
        print(f"README snippets: FAILED ({len(failed) + len(unrun)} of {len(blocks)} blocks, {secs:.0f} s):", file=sys.stderr)
        for _, b, what, _, _ in failed:
            print(f"  {b.name}: {what}", file=sys.stderr)
        for b in unrun:
            print(f"  {b.name}: never run", file=sys.stderr)
        return 1
    print(f"README snippets: all {len(r.results)} run blocks passed, {len(blocks) - len(r.results)} skipped with a reason ({secs:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
