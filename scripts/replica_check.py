"""The checks scripts/gpu_replica.sh makes on what scripts/gpu_full.sh brought back in $OUT.

    python scripts/replica_check.py DEV PROFILE RC RC_FAIL

DEV is the replica's folder (out2: the run, out3: a run that fails at once, repo: the device's copy
of the tree). The expected jobs come from the study (helpers/study.py: one training job per run of the
profile, one timed DDIM job per run that keeps an EMA), never from a number written here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import config, device, study  # noqa: E402

BOOKS = ("01_ddpm", "02_hyperparams", "03_cold_diffusion", "04_comparison")


def expected_jobs(profile: str) -> tuple[list[str], list[str]]:
    """(training jobs, timed jobs) of `profile`'s study, as "kind:preset"."""
    runs = study.runs(profile)
    keeps_ema = config.profile(profile).ema_decay is not None
    train = [f"{r.kind}:{r.preset}" for r in runs]
    timed = [f"{r.kind}:{r.preset}" for r in runs if r.ema and r.kind == "ddpm" and keeps_ema]
    return train, timed


def check_run(out: Path, profile: str, rc: int, html: list[str] | None = None) -> list[tuple[bool, str]]:
    """(passed, what) of each check on the OUT folder of a successful run."""
    checks: list[tuple[bool, str]] = []

    def check(ok, what):
        checks.append((bool(ok), what))

    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    print(f"$OUT of the run: {files}")
    check(rc == 0, f"gpu_full.sh run exited 0 (got {rc})")
    check(not device.check_limits(out), f"at most 8 files of at most 16 MiB {device.check_limits(out)}")
    check("manifest.json" in files and "gpu_full.log" in files, "manifest.json and gpu_full.log came back")
    try:
        contents = device.contents(out)
    except device.PackError as exc:
        contents = {}
        check(False, f"every packed file readable and verified ({exc})")
    else:
        check(True, f"every packed file readable and verified ({len(contents)} files)")
    manifest = device.read_manifest(out) if (out / "manifest.json").is_file() else {"entries": []}
    entries = {e["name"]: e for e in manifest["entries"]}
    log = (out / "gpu_full.log").read_text() if (out / "gpu_full.log").is_file() else ""
    check("Traceback" not in log and "error:" not in log, "no traceback or error in the log")

    train, timed = expected_jobs(profile)
    records = [entries.get(f"pretrain {j} train", {}).get("info", {}).get("record", {}) for j in train]
    check(
        all(
            r.get("status") == "ok" and r.get("train_seconds", 0) > 0 and r.get("concurrent_max", 0) >= 1
            for r in records
        ),
        f"{len(train)} pre-training jobs (the study's runs of {profile}) packed, timed, with their contention, all ok",
    )
    timed_records = [entries.get(f"pretrain {j} timed", {}).get("info", {}).get("record", {}) for j in timed]
    check(
        all(r.get("status") == "ok" and r.get("concurrent_max") == 1 for r in timed_records),
        f"{len(timed)} DDIM sweep(s) timed alone on the device",
    )
    logs = [n for n in contents if n.startswith(f"build/{profile}/pretrain/") and n.endswith(".log")]
    check(len(logs) == len(train) + len(timed), f"the workers' logs ({len(logs)} of {len(train) + len(timed)})")
    check(
        all(any(n.startswith(f"runs/{j.replace(':', '-')}-") and n.endswith(".pt") for n in contents) for j in train),
        "a checkpoint of every run",
    )
    check(
        all(f"notebook {b}" in log for b in BOOKS) and "pipeline wall time" in log,
        "timings per model and per notebook in the log",
    )
    res = [f"results/{profile}/{b}.json" for b in (*BOOKS, "pipeline")]
    check(all(n in contents for n in res), "results files of every notebook and pipeline.json")
    if f"results/{profile}/pipeline.json" in contents:
        rec = json.loads(contents[f"results/{profile}/pipeline.json"])
        check(all(rec["notebooks"][b]["status"] == "ok" for b in BOOKS), "every notebook ran ok")
    pngs = [n for n in contents if n.startswith(f"plots/{profile}/") and n.endswith(".png")]
    check(len(pngs) >= 20, f"figures ({len(pngs)} PNGs)")
    check(
        sum(n.startswith(f"build/{profile}/") and n.endswith(".ipynb") for n in contents) == len(BOOKS),
        "executed notebooks",
    )
    if html is not None:
        check(len(html) == len(BOOKS), f"HTML of every notebook exported with the carried nbconvert ({html})")
    return checks


def check_failed_run(out: Path, rc: int) -> list[tuple[bool, str]]:
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    log = (out / "gpu_full.log").read_text() if (out / "gpu_full.log").is_file() else ""
    return [
        (
            rc != 0 and "gpu_full.log" in files,
            f"a failing run exits non-zero ({rc}) and still brings back its log ({files})",
        ),
        ("jobs" in log and "exit status" in log, "the failing run's log says why and with which status"),
        (not device.check_limits(out), "and stays within the limits"),
    ]


def main(argv: list[str]) -> int:
    dev, profile, rc, rc_fail = Path(argv[0]), argv[1], int(argv[2]), int(argv[3])
    html = sorted(p.name for p in (dev / "repo" / "build" / profile).glob("*.html"))
    checks = check_run(dev / "out2", profile, rc, html) + check_failed_run(dev / "out3", rc_fail)
    for ok, what in checks:
        print(("  ok   " if ok else "  FAIL ") + what)
    failed = [what for ok, what in checks if not ok]
    print("replica: all checks passed" if not failed else "replica: FAILED: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
