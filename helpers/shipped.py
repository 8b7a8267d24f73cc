"""Final weights shipped with the repository for a profile too long to train here.

`full` trains 100 epochs on a GPU. So that notebooks 01 and 03 open its models on a laptop, the
runs the explorers open (`StudyRun.shipped` in helpers/study.py) ship as one archive,
helpers/weights/runs-<profile>.tar.xz (at most MAX_BYTES), which the runs cache takes them from the
first time a study asks for one (`helpers.runs.train`, `helpers.runs.finished_model`).

Per run it holds the run's record (run.json), its last checkpoint without optimiser state or
training generator (model, EMA, logs and the global generator: what loads a finished run) and its
cached results (final numbers, DDIM sweep, reconstructions), plus `manifest.json`: the profile, the
commit, and per run its folder, key, kind, preset, seed, the device type and precision it was
trained in, and each file's SHA-256. A run is used only where the present code computes its key for
that device and precision (helpers/runs.py checks it): a changed network or engine trains anew.

    python -m helpers.shipped pack --profile full     # from finished runs in runs/
    python -m helpers.shipped list --profile full
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from . import config, store, study
from .errors import PipelineError

MAX_BYTES = 10 * 1024 * 1024
MANIFEST = "manifest.json"


class ShippedError(PipelineError):
    """A shipped archive is unreadable, fails a checksum or cannot be made within its limit."""


def archive_path(profile: str) -> Path:
    return config.WEIGHTS_DIR / f"runs-{profile}.tar.xz"


def manifest(profile: str) -> dict | None:
    """The manifest of the profile's archive, or None where none is shipped."""
    path = archive_path(profile)
    if not path.is_file():
        return None
    stat = path.stat()
    return _manifest_of(str(path), stat.st_mtime_ns, stat.st_size)


_MANIFESTS: dict[tuple, dict] = {}


def _manifest_of(path: str, mtime: int, size: int) -> dict:
    if (path, mtime, size) not in _MANIFESTS:
        try:
            with tarfile.open(path, "r:xz") as tar:
                member = tar.extractfile(MANIFEST)
                _MANIFESTS[path, mtime, size] = json.loads(member.read()) if member else {}
        except (tarfile.TarError, KeyError, OSError, EOFError, json.JSONDecodeError) as exc:
            raise ShippedError(f"{path} is unreadable ({type(exc).__name__}: {exc}); restore it with git") from exc
    return _MANIFESTS[path, mtime, size]


def entry(profile: str, kind: str, preset: str, seed: int) -> dict | None:
    """The shipped run of (kind, preset, seed) under `profile`, or None."""
    found = manifest(profile)
    for run in (found or {}).get("runs", []):
        if (run["kind"], run["preset"], run["seed"]) == (kind, preset, seed):
            return run
    return None


def describe(run: dict) -> str:
    return f"{run['dir']} (trained on {run['device']} in {run['precision']})"


def _member(name: str) -> tuple[str, str]:
    """(run folder, file) of an archive member; ShippedError for anything that could escape."""
    p = PurePosixPath(name)
    if len(p.parts) != 2 or any(part in ("", ".", "..") or part.startswith(".") for part in p.parts):
        raise ShippedError(f"archive member {name!r} is not '<run folder>/<file>'")
    return p.parts[0], p.parts[1]


# --------------------------------------------------------------------------- install
def install(profile: str, run: dict, runs_dir: Path, log: Callable[[str], None] = print) -> Path:
    """Put the shipped `run` (an `entry`) into `runs_dir` unless its folder already holds a
    checkpoint. Every file is checked against the manifest before any is written; each is written
    atomically. Returns the run folder."""
    run_dir = Path(runs_dir) / run["dir"]
    if any(run_dir.glob("ckpt-*.pt")):
        return run_dir
    path = archive_path(profile)
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:xz") as tar:
            for info in tar:
                folder, name = _member(info.name) if info.name != MANIFEST else ("", "")
                if folder == run["dir"] and info.isfile():
                    files[name] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShippedError(f"{path} is unreadable ({type(exc).__name__}: {exc}); restore it with git") from exc
    for name, digest in run["files"].items():
        if name not in files:
            raise ShippedError(f"{path} lacks {run['dir']}/{name}, which its manifest lists; restore it with git")
        if store.bytes_hash(files[name]) != digest:
            raise ShippedError(f"{path}: {run['dir']}/{name} fails its SHA-256 check; restore it with git")
    with store.file_lock(run_dir / ".lock", f"installing {run_dir.name}", log):
        for name in sorted(run["files"], key=lambda n: n.startswith("ckpt-")):  # the checkpoint last
            store.atomic_write_bytes(run_dir / name, files[name])
    log(f"{describe(run)}: installed from {path.name} (made at commit {run.get('commit') or 'unknown'})")
    return run_dir


# --------------------------------------------------------------------------- pack
def pack(
    profile: str,
    seed: int = 0,
    runs_dir: Path | None = None,
    dest: Path | None = None,
    max_bytes: int = MAX_BYTES,
    log: Callable[[str], None] = print,
) -> Path:
    """Write the archive of `profile`'s shipped runs from the finished runs in `runs_dir`, in the
    study's order; a run that would take the archive over `max_bytes` is left out (said). A shipped
    run that is not finished there is an error: the archive would silently lack it."""
    from . import runs

    prof = config.profile(profile)
    dest = Path(dest or archive_path(profile))
    runs_dir = Path(runs_dir or config.RUNS_DIR)
    commit = config.git("rev-parse", "HEAD")
    wanted = [r for r in study.runs(profile) if r.shipped]
    if not wanted:
        raise ShippedError(f"the study of profile {profile!r} marks no run as shipped (helpers/study.py)")
    packed: list[tuple[dict, dict[str, bytes]]] = []
    archive = b""
    for r in wanted:
        run_dir, device, precision = runs.finished_dir(r.kind, r.preset, prof, seed, runs_dir)
        blobs = {p.name: p.read_bytes() for p in sorted(run_dir.glob("*.json"))}
        ckpt = sorted(run_dir.glob("ckpt-*.pt"))[-1]
        blobs[ckpt.name] = _without_optimiser(ckpt)
        run = {
            "dir": run_dir.name,
            "key": json.loads(blobs["run.json"])["key"],
            "kind": r.kind,
            "preset": r.preset,
            "seed": seed,
            "device": device,
            "precision": precision,
            "commit": commit,
            "files": {name: store.bytes_hash(data) for name, data in blobs.items()},
        }
        candidate = [*packed, (run, blobs)]
        data = _archive_bytes(profile, candidate)
        if len(data) > max_bytes:
            log(
                f"{run_dir.name}: left out, the archive would be {len(data) / 2**20:.1f} MiB (limit {max_bytes / 2**20:.1f})"
            )
            continue
        packed, archive = candidate, data
        log(f"{run_dir.name}: packed ({device}, {precision}); archive {len(data) / 2**20:.2f} MiB")
    if not packed:
        raise ShippedError(f"no shipped run of {profile!r} fits in {max_bytes} bytes")
    store.atomic_write_bytes(dest, archive)
    return dest


def _without_optimiser(ckpt: Path) -> bytes:
    """The bytes of checkpoint `ckpt` as a finished run loads it: no optimiser state, no training
    generator (verified, like every checkpoint)."""
    payload = store.load_tensors(ckpt)
    slim = {k: payload[k] for k in ("key", "epoch", "model", "ema", "logs") if k in payload}
    slim["rng"] = {"torch": payload["rng"]["torch"]}
    with tempfile.TemporaryDirectory() as tmp:
        return store.save_tensors(Path(tmp) / ckpt.name, slim).read_bytes()


def _archive_bytes(profile: str, runs: list[tuple[dict, dict[str, bytes]]]) -> bytes:
    """The archive, byte for byte the same for the same runs (sorted members, no dates or owners)."""
    doc = {"profile": profile, "runs": [run for run, _ in runs]}
    members = [(MANIFEST, json.dumps(doc, indent=1, sort_keys=True).encode())]
    members += [(f"{run['dir']}/{name}", blobs[name]) for run, blobs in runs for name in sorted(blobs)]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.shipped", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("pack", "list"))
    parser.add_argument("--profile", default="full", choices=sorted(config.PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            path = pack(args.profile, args.seed, args.runs_dir)
            print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")
        else:
            found = manifest(args.profile)
            if found is None:
                print(f"nothing is shipped for {args.profile} ({archive_path(args.profile)} does not exist)")
            for run in (found or {}).get("runs", []):
                print(f"{describe(run)}  key {run['key']}  commit {run.get('commit')}")
    except PipelineError as exc:
        print(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
