"""What every benchmark shares: the machine's description, running a command while measuring
its wall time and peak memory, and writing a result section into BENCHMARKS.md.

Each script owns one section, fenced by ``<!-- bench:NAME -->`` markers, and replaces only that
section, so the scripts run alone and in any order. A superseded section moves with its markers
to benchmarks/HISTORY.md, and a script run again rewrites it there.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
HISTORY_MD = ROOT / "benchmarks" / "HISTORY.md"
WORK = Path(os.environ.get("NOISYSTUDENT_BENCH_DIR", ROOT / "runs" / "bench"))
CLI = [sys.executable, "-m", "noisystudent"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]

# Runs a command and prints its peak RSS (kB, Linux) and wall seconds as JSON on the last line.
_MEASURE = ("import json,resource,subprocess,sys,time;t=time.perf_counter();"
            "r=subprocess.run(sys.argv[1:]).returncode;"
            "print(json.dumps({'rc':r,'seconds':time.perf_counter()-t,"
            "'max_rss_kb':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


def machine() -> str:
    import torch

    from noisystudent.core.device import cpu_kind

    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        names = re.findall(r"model name\s*:\s*(.+)", info)
        family = re.findall(r"cpu family\s*:\s*(\d+)", info)
        model = re.findall(r"^model\s*:\s*(\d+)", info, re.M)
        cpu = names[0].strip() if names else cpu
        if family and model:
            cpu += f" (family {family[0]} model {model[0]})"
    except OSError:
        pass
    cpu += f", {cpu_kind()}"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def run(argv: list[str], env: dict | None = None) -> dict:
    """Run argv to completion; its wall time and the peak RSS of its largest process."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True,
                         text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"failed ({result['rc']}): {shlex.join(argv)}\n{out.stderr[-3000:]}")
    result["max_rss_mb"] = result["max_rss_kb"] / 1024
    return result


def config_teacher(config: Path, out: Path, seed: int) -> Path:
    """A self-training config's teacher alone (iteration 0), trained once into ``out`` and
    resumed if it was interrupted; returns the teacher's run directory."""
    from noisystudent.core.layout import SelfTrainLayout

    if not (out / "report.json").is_file():
        resume = ["--resume"] if (out / "config.yaml").is_file() else []
        run(CLI + ["self-train", str(config), "--out", str(out), "--quiet", "--iterations", "0",
                   "--seed", str(seed), "--no-corruptions", *resume])
    return SelfTrainLayout(out).teacher


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def write_section(name: str, title: str, body: str, seeds: str) -> None:
    """Replace this benchmark's section in the file that holds its markers, BENCHMARKS.md
    looked at first, then benchmarks/HISTORY.md (where a superseded section moves, markers
    and all); append it to BENCHMARKS.md when neither does. Atomic: a temporary file, renamed."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (f"<!-- bench:{name} -->\n## {title}\n\n"
               f"Measured {stamp} on {machine()}; seeds: {seeds}.\n"
               f"Command: `{command_line()}`\n\n{body.strip()}\n<!-- /bench:{name} -->\n")
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->\n", re.S)
    texts = {path: path.read_text() for path in (BENCHMARKS_MD, HISTORY_MD) if path.is_file()}
    path = next((path for path, text in texts.items() if pattern.search(text)), BENCHMARKS_MD)
    text = texts.get(path, "# Benchmarks\n")
    text = pattern.sub(lambda _: section, text) if pattern.search(text) \
        else text.rstrip("\n") + "\n\n" + section
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(f"wrote section '{title}' of {path}")


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start
