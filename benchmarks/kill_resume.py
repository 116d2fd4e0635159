"""Kill a run at random moments, resume it, and check that its final report equals an uninterrupted run's.

    python benchmarks/kill_resume.py               # 10 kills; a few minutes on 2 cores
    python benchmarks/kill_resume.py --kills 3 --no-write

A small pipeline (seg-cnn on synthetic InSAR: train 3 epochs → prune-l1 → finetune 2 epochs → fp16 → onnx)
runs once uninterrupted into its own store (T seconds), and once more fully cached (the start-up cost
c). K kill moments t_1 < … < t_K are drawn uniformly in [0, T]; the same pipeline is then started K times
in a subprocess, start i sent SIGKILL after c + (t_i − t_{i−1}) seconds, so that the kills fall at the K
moments of its cumulative work (each start resumes what the previous one left); then it runs to completion. Compared: every stage's metrics, parameter count,
size and the bytes of every stage file (weights.safetensors, model.onnx). Latency is not compared (it is
a measurement of the moment); it is switched off in this pipeline.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write_section  # noqa: E402

PIPELINE = """\
name: kill_resume
seed: 0
data: {name: insar-synthetic, n_train: 256, n_val: 64, n_test: 16, size: 32}
model:
  frontend: zoo
  model: seg-cnn
  width: 8
  train: {epochs: 3, batch_size: 16}
passes:
  - prune-l1: {ratio: 0.5}
  - finetune: {epochs: 2, batch_size: 16}
  - fp16
export: [onnx]
evaluate: {batch_size: 32, latency: {backends: []}}
"""


def run(pipeline: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "compressor.cli", "run", str(pipeline), "--out", str(out),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def comparable(run_dir: Path) -> list[dict]:
    stages = json.loads((run_dir / "report.json").read_text())["stages"]
    out = []
    for s in stages:
        files = {f.name: f.read_bytes() for f in (run_dir / s["artifact"].split("/")[0]).iterdir()
                 if f.name in ("weights.safetensors", "model.onnx")}
        out.append({"name": s["name"], "metrics": s["metrics"], "params": s["params"], "size": s["size_bytes"],
                    "files": files})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "kill_resume")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "ref").mkdir(parents=True)
    (args.out / "killed").mkdir(parents=True)
    pipeline = args.out / "pipeline.yaml"
    pipeline.write_text(PIPELINE)

    start = time.perf_counter()
    ref = run(pipeline, args.out / "ref" / "run")
    if ref.wait() != 0:
        sys.exit("error: the reference run failed")
    ref_s = time.perf_counter() - start

    t = time.perf_counter()
    run(pipeline, args.out / "ref" / "run").wait()
    startup_s = time.perf_counter() - t

    rng = random.Random(args.seed)
    moments = sorted(rng.uniform(0, ref_s) for _ in range(args.kills))
    outcomes = []
    for prev, moment in zip([0.0, *moments], moments):
        delay = startup_s + moment - prev
        proc = run(pipeline, args.out / "killed" / "run")
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outcomes.append("had already finished" if finished else "killed")
    final = run(pipeline, args.out / "killed" / "run")
    if final.wait() != 0:
        sys.exit("error: the resumed run failed")
    wall = time.perf_counter() - start

    a, b = comparable(args.out / "ref" / "run"), comparable(args.out / "killed" / "run")
    equal = a == b
    diffs = [x["name"] for x, y in zip(a, b) if x != y]
    body = "\n".join([
        "## Kill and resume",
        "",
        f"- command: `python benchmarks/kill_resume.py --kills {args.kills} --seed {args.seed}`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; wall time {wall / 60:.1f} min; the reference run took {ref_s:.0f} s, "
        f"a fully cached start {startup_s:.1f} s",
        "- pipeline: seg-cnn on synthetic InSAR, train 3 epochs → prune-l1 0.5 → finetune 2 epochs → fp16 → onnx",
        f"- SIGKILL at {', '.join(f'{m:.1f}' for m in moments)} s of cumulative work "
        f"({outcomes.count('killed')} killed mid-run, {outcomes.count('had already finished')} after it had finished), "
        "each start resuming what the previous one left, then one run to completion",
        f"- final report equal to the uninterrupted run's (metrics, params, sizes, and the bytes of every "
        f"weights.safetensors and model.onnx): **{'yes' if equal else 'no: ' + ', '.join(diffs)}**",
    ]) + "\n"
    print(body)
    if not args.no_write:
        write_section("kill-resume", body)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
