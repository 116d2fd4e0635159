"""Fuzz the pipeline loader: N random documents and N random texts (hypothesis), each must load or raise
one of the project's errors (CompressError), never anything else, and none may take a second.

    python benchmarks/fuzz_config.py              # 10,000 of each; about 5 minutes on 2 cores
    python benchmarks/fuzz_config.py --n 500 --no-write

The strategies are those of tests/test_config_fuzz.py (which runs 100 of each in the suite).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import machine, write_section  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import yaml
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from test_config_fuzz import DOCS, load

    slowest = {"doc": 0.0, "text": 0.0}

    def timed(kind: str, text: str) -> None:
        t = time.perf_counter()
        load(text)
        slowest[kind] = max(slowest[kind], time.perf_counter() - t)

    cfg = settings(max_examples=args.n, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
    alphabet = st.sampled_from(list("abc:- []{}&*!?<>|#'\"\n\t,.01%@`"))
    start = time.perf_counter()
    cfg(given(DOCS)(lambda doc: timed("doc", yaml.safe_dump(doc))))()
    cfg(given(st.text(alphabet=alphabet, max_size=60))(lambda text: timed("text", text)))()
    wall = time.perf_counter() - start
    body = "\n".join([
        "## Config loader fuzzing",
        "",
        f"- command: `python benchmarks/fuzz_config.py --n {args.n}`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; wall time {wall / 60:.1f} min",
        f"- {args.n:,} random documents (nested mappings and lists of pipeline keys and odd scalars: huge "
        f"integers, NaN, text) and {args.n:,} random YAML-ish texts: every one loaded or raised a CompressError "
        "(one line, exit 2 at the CLI); no other exception",
        f"- slowest single load: {slowest['doc'] * 1000:.0f} ms (documents), {slowest['text'] * 1000:.0f} ms (texts)",
    ]) + "\n"
    print(body)
    if not args.no_write:
        write_section("fuzz-config", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
