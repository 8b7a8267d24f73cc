"""A device run that never loses what it finished: the preflight, and the packer that brings every
finished job back through `$OUT`.

A lent GPU machine returns only the files a command leaves in one folder (`$OUT`): at most
`MAX_FILES` files of at most `MAX_BYTES` each, and a command at its time limit is SIGKILLed with
everything it started (no exit trap runs). So:

- `preflight(profile)` checks, in seconds and before any worker starts, what the study needs and
  would otherwise miss only after training: the four MNIST files (MD5), the classifier's weights
  (SHA-256), the Inception-v3 weights (SHA-1, where the profile scores with them) and every module
  the workers (and, with `notebooks=True`, the pipeline and the notebooks) import. `PreflightError`
  names each problem.
- `Packer(out)` adds a finished job's files to `$OUT` the moment it finishes: a few uncompressed tar
  archives (`pack-01.tar`, ...), each rewritten whole under a temporary name and renamed (a kill
  leaves the previous version), rotated before `max_bytes`, a member too big for one archive split
  into parts; then `manifest.json` (what each job packed, with each file's SHA-256, and its status
  and timings), also renamed into place; then a copy of the run's log. The manifest is written after
  the archives, so whatever it lists is in them. Files in `$OUT`: the manifest, the log, the
  archives and at most one temporary at a time; the packer never goes over `max_files` in all (what
  would not fit is left out and listed under "dropped").
- `unpack(folders)` puts what came back into place (run folders, results, figures, logs), each file
  verified against the manifest; a later lease given those folders resumes from the checkpoints.

Archive member names start with the folder they belong to (`runs/`, `results/`, `plots/`, `build/`:
`ROOTS`), so they land in whatever folders this checkout is configured with.

    python -m helpers.device preflight --profile NAME [--workers-only] [--out DIR]
    python -m helpers.device unpack DIR [DIR ...]
    python -m helpers.device verify DIR [--max-files N] [--max-bytes B]
    python -m helpers.device leftovers --out DIR --profile NAME [--log FILE]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import io
import json
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from . import config, store
from .errors import PipelineError

MAX_FILES = 8  # what comes back from a lent machine: at most 8 files ...
MAX_BYTES = 16 * 1024 * 1024  # ... of at most 16 MiB each
MANIFEST = "manifest.json"
ARCHIVE = "pack-{:02d}.tar"
FORMAT = 1
_BLOCK = tarfile.BLOCKSIZE  # 512
_RECORD = tarfile.RECORDSIZE  # 10240: a tar file's size is a multiple of it
_MIN_PART = 64 * 1024  # a split member's part is never smaller (except its last)


class PreflightError(PipelineError):
    """Something the run needs is missing or wrong; the message names each problem."""


class PackError(PipelineError):
    """An archive or the manifest in an OUT folder is unreadable or disagrees with its files."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- where members go
def roots() -> dict[str, Path]:
    """Archive prefix -> the folder it stands for in this checkout (read at every call)."""
    from . import results

    return {
        "runs": config.RUNS_DIR,
        "results": results.results_dir(),
        "plots": config.PLOTS_DIR,
        "build": config.BUILD_DIR,
    }


def arcname(path: Path) -> str:
    """The archive name of a file under one of `roots()`: '<prefix>/<path inside it>'."""
    path = Path(path).resolve()
    for prefix, folder in roots().items():
        try:
            return f"{prefix}/{path.relative_to(Path(folder).resolve()).as_posix()}"
        except ValueError:
            continue
    raise ValueError(f"{path} is in none of the folders an OUT archive holds ({sorted(roots())})")


def destination(name: str) -> Path:
    """Where archive member `name` goes in this checkout; ValueError for a name that could escape."""
    p = PurePosixPath(name)
    if p.is_absolute() or len(p.parts) < 2 or any(part in ("", ".", "..") for part in p.parts):
        raise ValueError(f"archive member {name!r} is not a relative path under one of {sorted(roots())}")
    if p.parts[0] not in roots():
        raise ValueError(f"archive member {name!r} is not under one of {sorted(roots())}")
    return Path(roots()[p.parts[0]]).joinpath(*p.parts[1:])


def run_files(run_dir: Path) -> list[Path]:
    """What a run folder contributes: its record, its newest checkpoint (what resumes it or, when
    finished, what loads it) and its cached results (final-*, ddim-*, reconstruction-* and the
    timing context). Older checkpoints, locks and markers stay behind."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    files = sorted(p for p in run_dir.glob("*.json") if p.is_file())
    ckpts = sorted(run_dir.glob("ckpt-*.pt"))
    return files + ckpts[-1:]


# --------------------------------------------------------------------------- the packer
def _header_bytes(name: str) -> int:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = 1, 0, 0o644
    return len(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def _file_size(data_end: int) -> int:
    """Size of a tar file whose members end at `data_end` (two zero blocks, padded to a record)."""
    return -(-(data_end + 2 * _BLOCK) // _RECORD) * _RECORD


class Packer:
    """Adds finished jobs' files to archives in an OUT folder (see the module's docstring).

    out: the folder. max_files / max_bytes: what may come back (the manifest, the log, the archives
    and one temporary at a time count; so do other files already there). log_file: a log copied into
    OUT (its last max_bytes) after every addition. known: archive name -> SHA-256 of files an earlier
    OUT already brought back (`unpack` returns it): those are not packed again. An OUT folder that
    already holds a manifest is continued."""

    def __init__(
        self,
        out: Path,
        *,
        max_files: int = MAX_FILES,
        max_bytes: int = MAX_BYTES,
        log_file: Path | None = None,
        known: dict[str, str] | None = None,
        log: Callable[[str], None] = print,
    ):
        config.check_int("max_files", max_files, 4)
        config.check_int("max_bytes", max_bytes, 4 * _RECORD + _MIN_PART)
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.max_files, self.max_bytes = max_files, max_bytes
        self.log_file = Path(log_file) if log_file else None
        self.known = dict(known or {})
        self.log = log
        store.remove_stale_temporaries(self.out)
        self.manifest = read_manifest(self.out) or {
            "format": FORMAT,
            "limits": {"max_files": max_files, "max_bytes": max_bytes},
            "archives": {},
            "entries": [],
        }
        self.manifest["limits"] = {"max_files": max_files, "max_bytes": max_bytes}
        ours = {MANIFEST, *self.manifest["archives"], *([self.log_file.name] if self.log_file else [])}
        others = [p.name for p in self.out.iterdir() if p.name not in ours]
        # the manifest, one temporary, the log and whatever else is there already
        self.max_archives = max_files - 2 - (1 if self.log_file else 0) - len(others)
        if self.max_archives < 1:
            raise ValueError(
                f"{self.out} has room for no archive: max_files={max_files} with the manifest, a temporary"
                f"{', the log' if self.log_file else ''} and {len(others)} other file(s) ({others})"
            )
        # capacity of one archive for members (header and padded data) before the end blocks
        self.capacity = (max_bytes // _RECORD) * _RECORD - 2 * _BLOCK

    # what is packed already
    def packed(self) -> dict[str, str]:
        """Archive name -> SHA-256 of every file this OUT folder holds (the latest of each)."""
        out = {}
        for entry in self.manifest["entries"]:
            for name, m in entry["members"].items():
                out[name] = m["sha256"]
        return out

    def entries(self, name: str | None = None) -> list[dict]:
        return [e for e in self.manifest["entries"] if name is None or e["name"] == name]

    # adding
    def add(self, name: str, files: Iterable[Path | tuple[str, Path]], status: str = "ok", **info) -> dict:
        """Pack `files` (paths under `roots()`, or (archive name, path) pairs) as the entry `name`
        with its status and any JSON-able `info`; return the manifest entry. Files that are missing,
        already packed with the same content, or brought back by an earlier OUT are listed, not
        packed again; a file that fits nowhere is listed under "dropped"."""
        entry = {"name": name, "status": status, "packed": _now(), "info": store.to_plain(info, name)}
        entry.update(members={}, unchanged=[], missing=[], dropped=[])
        seen = {**self.known, **self.packed()}
        blobs = []
        for item in files:
            arc, path = item if isinstance(item, tuple) else (arcname(item), Path(item))
            destination(arc)  # refuses a name that could not be unpacked
            try:
                data = Path(path).read_bytes()
            except OSError:
                entry["missing"].append(arc)
                continue
            sha = hashlib.sha256(data).hexdigest()
            if seen.get(arc) == sha:
                entry["unchanged"].append(arc)
                continue
            blobs.append((arc, data, sha))
        blobs.sort(key=lambda b: len(b[1]))  # small results and logs first: they matter most
        archives = {k: dict(v) for k, v in self.manifest["archives"].items()}
        plan = self._plan(blobs, entry)
        try:
            for archive, items in plan.items():
                self._write(archive, items)
        except BaseException:
            self.manifest["archives"] = archives  # what is on disk (a failed write renamed nothing)
            raise
        self.manifest["entries"].append(entry)
        self._write_manifest()
        self.copy_log()
        return entry

    def _plan(self, blobs: list[tuple[str, bytes, str]], entry: dict) -> dict[str, list[tuple[str, bytes]]]:
        """Place each blob (whole, or in parts over several archives) without writing anything;
        record its location in `entry`. Returns archive -> [(member name, bytes)]."""
        archives = dict(self.manifest["archives"])  # name -> {"bytes", "data_end"}, updated as planned
        plan: dict[str, list[tuple[str, bytes]]] = {}
        # A file packed again (it changed) is stored under a new member name, "<name>~<n>", so each
        # entry of the manifest keeps pointing at its own bytes.
        stored = {member for e in self.manifest["entries"] for m in e["members"].values() for _, member in m["in"]}

        def current() -> str | None:
            return max(archives) if archives else None

        def room(name: str | None, member: str) -> int:
            """Bytes of data that fit in archive `name` as a member called `member` (-1: no archive)."""
            return -1 if name is None else self.capacity - archives[name]["data_end"] - _header_bytes(member)

        def open_new() -> str | None:
            if len(archives) >= self.max_archives:
                return None
            name = ARCHIVE.format(len(archives) + 1)
            archives[name] = {"bytes": 0, "data_end": 0}
            return name

        def put(name: str, member: str, data: bytes) -> list[str]:
            archives[name]["data_end"] += _header_bytes(member) + _padded(len(data))
            plan.setdefault(name, []).append((member, data))
            return [name, member]

        for arc, data, sha in blobs:
            before = ({k: dict(v) for k, v in archives.items()}, {k: list(v) for k, v in plan.items()})
            where: list[list[str]] = []
            base, n = arc, 1
            while base in stored or f"{base}.part000" in stored:
                n += 1
                base = f"{arc}~{n}"
            target = current()
            if room(target, base) >= len(data):  # whole, in the current archive
                where.append(put(target, base, data))
            elif self.capacity - _header_bytes(base) >= len(data):  # whole, in a new one
                target = open_new()
                if target is not None:
                    where.append(put(target, base, data))
            else:  # bigger than an archive: in parts, filling the current archive first
                pos, i = 0, 0
                while pos < len(data):
                    part = f"{base}.part{i:03d}"
                    if room(target, part) < min(_MIN_PART, len(data) - pos):
                        target = open_new()
                        if target is None:
                            break
                    chunk = data[pos : pos + room(target, part)]
                    where.append(put(target, part, chunk))
                    pos, i = pos + len(chunk), i + 1
                if pos < len(data):
                    where = []
            if not where:  # no room left: undo this file's parts and list it
                archives, plan = before
                entry["dropped"].append(
                    {"path": arc, "bytes": len(data), "reason": f"no room: OUT holds at most {self.max_files} files"}
                )
                self.log(f"[out] {arc} ({len(data)} bytes) left out: OUT holds at most {self.max_files} files")
                continue
            entry["members"][arc] = {"bytes": len(data), "sha256": sha, "in": where}
            stored.update(member for _, member in where)
        for name in plan:
            archives[name]["bytes"] = _file_size(archives[name]["data_end"])
        self.manifest["archives"] = archives
        return plan

    def _write(self, archive: str, items: list[tuple[str, bytes]]) -> None:
        """The archive rewritten with `items` appended: a copy under a temporary name, renamed."""
        target = self.out / archive
        with store.atomic_path(target) as tmp:
            if target.is_file():
                with open(target, "rb") as src, open(tmp, "wb") as dst:
                    dst.write(src.read())
                mode = "a"
            else:
                mode = "w"
            with tarfile.open(tmp, mode, format=tarfile.GNU_FORMAT) as tf:
                for member, data in items:
                    info = tarfile.TarInfo(member)
                    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                    tf.addfile(info, io.BytesIO(data))
            size = tmp.stat().st_size
            if size != self.manifest["archives"][archive]["bytes"] or size > self.max_bytes:
                raise PackError(
                    f"{archive} came out at {size} bytes, planned {self.manifest['archives'][archive]['bytes']} "
                    f"(limit {self.max_bytes}); not written"
                )

    def _write_manifest(self) -> None:
        self.manifest["updated"] = _now()
        store.atomic_write_text(self.out / MANIFEST, json.dumps(self.manifest, indent=1) + "\n")

    def copy_log(self) -> None:
        """The log (its last max_bytes) copied into OUT under its own name."""
        if self.log_file is None or not self.log_file.is_file():
            return
        with open(self.log_file, "rb") as f:
            f.seek(max(0, self.log_file.stat().st_size - self.max_bytes))
            data = f.read(self.max_bytes)
        store.atomic_write_bytes(self.out / self.log_file.name, data)


# --------------------------------------------------------------------------- reading OUT back
def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PackError(f"{path} is unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackError(f"{path} is not a manifest of format {FORMAT}")
    return manifest


def _members(folder: Path, manifest: dict) -> dict[tuple[str, str], bytes]:
    """(archive, member) -> bytes of every member of the archives the manifest names."""
    out = {}
    for archive in manifest["archives"]:
        try:
            with tarfile.open(Path(folder) / archive) as tf:
                for info in tf.getmembers():
                    if info.isfile():
                        out[(archive, info.name)] = tf.extractfile(info).read()
        except (OSError, tarfile.TarError) as exc:
            raise PackError(f"{Path(folder) / archive} is unreadable ({exc})") from exc
    return out


def contents(folder: Path) -> dict[str, bytes]:
    """Archive name -> bytes of every file the OUT folder's manifest lists (the latest of each),
    each checked against its SHA-256; PackError on any disagreement."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise PackError(f"{folder} holds no {MANIFEST}")
    members = _members(folder, manifest)
    out = {}
    for entry in manifest["entries"]:
        for name, m in entry["members"].items():
            try:
                data = b"".join(members[(archive, member)] for archive, member in m["in"])
            except KeyError as exc:
                raise PackError(f"{folder}: {name} of {entry['name']!r} is not in its archive {exc}") from None
            if hashlib.sha256(data).hexdigest() != m["sha256"]:
                raise PackError(f"{folder}: {name} of {entry['name']!r} fails its SHA-256 check")
            out[name] = data
    return out


def check_limits(folder: Path, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> list[str]:
    """What in an OUT folder would not come back: too many files, or files too big."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    problems = [
        f"{p.name} is {p.stat().st_size} bytes, over {max_bytes}" for p in files if p.stat().st_size > max_bytes
    ]
    if len(files) > max_files:
        problems.append(f"{len(files)} files, over {max_files}: {sorted(p.name for p in files)}")
    return problems


def unpack(folders: Iterable[Path], log: Callable[[str], None] = print) -> dict[str, str]:
    """Put the files of each OUT folder (in order: a later one wins) into this checkout's folders,
    each verified against its manifest; return archive name -> SHA-256 of what is now in place
    (a Packer given it as `known` does not pack those files again)."""
    placed: dict[str, str] = {}
    for folder in folders:
        files = contents(folder)
        for name, data in files.items():
            target = destination(name)
            if not (target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data):
                store.atomic_write_bytes(target, data)
            placed[name] = hashlib.sha256(data).hexdigest()
        log(f"[out] unpacked {len(files)} file(s) from {folder}")
    return placed


def leftovers(profile: str) -> list[Path]:
    """What a run of `profile` leaves outside the run folders: its results, figures, executed
    notebooks and logs (the exit trap's last resort packs those the packer has not)."""
    from . import results

    found = []
    for folder, patterns in (
        (results.results_dir() / profile, ("*.json",)),
        (config.PLOTS_DIR / profile, ("*.png", "*.pdf")),
        (config.BUILD_DIR / profile, ("*.ipynb", "*.log", "*.jsonl")),
    ):
        for pattern in patterns:
            found += [p for p in sorted(folder.rglob(pattern)) if p.is_file() and not p.name.startswith(".")]
    return found


# --------------------------------------------------------------------------- preflight
WORKER_MODULES = (
    "torch",
    "torchmetrics",
    "numpy",
    "tqdm",
    "helpers.config",
    "helpers.store",
    "helpers.hardware",
    "helpers.data",
    "helpers.classifier",
    "helpers.inception",
    "helpers.metrics",
    "helpers.models",
    "helpers.ddpm",
    "helpers.cold",
    "helpers.degradations",
    "helpers.ema",
    "helpers.training",
    "helpers.runs",
    "helpers.analyses",
    "helpers.study",
    "helpers.results",
    "helpers.pretrain",
)
PIPELINE_MODULES = ("papermill", "nbformat", "nbclient", "nbconvert", "ipykernel", "traitlets", "helpers.pipeline")


def notebook_modules() -> list[str]:
    """The modules the notebooks import (read from their code cells)."""
    found = set()
    for path in sorted(config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
                    if node.module == "helpers":
                        found.update(f"helpers.{a.name}" for a in node.names)
    return sorted(found)


def preflight(
    profile: str, *, notebooks: bool = True, out: Path | None = None, log: Callable[[str], None] = print
) -> dict:
    """Check, in seconds, what the runs of `profile` need (see the module's docstring); return what
    was checked, or raise PreflightError naming every problem."""
    config.check_choice("profile", profile, config.PROFILES)
    prof = config.profile(profile)
    t0 = time.perf_counter()
    problems, checked = [], {}
    modules = list(WORKER_MODULES)
    if notebooks:
        modules += [m for m in (*PIPELINE_MODULES, *notebook_modules()) if m not in modules]
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure to import is a problem to name, not to raise
            problems.append(f"cannot import {name}: {type(exc).__name__}: {str(exc).strip()[:200]}")
    checked["imports"] = len(modules)
    if notebooks and "papermill" not in " ".join(problems):
        try:
            from jupyter_client.kernelspec import KernelSpecManager

            KernelSpecManager().get_kernel_spec("python3")
        except Exception as exc:
            problems.append(f"no 'python3' Jupyter kernel for papermill: {type(exc).__name__}: {exc}")
        try:
            import nbformat
            from nbconvert import HTMLExporter

            HTMLExporter().from_notebook_node(nbformat.v4.new_notebook())
        except Exception as exc:
            problems.append(f"nbconvert cannot export HTML (its templates?): {type(exc).__name__}: {exc}")

    try:
        from . import data
    except Exception as exc:
        problems.append(f"MNIST not checked: helpers.data does not import ({type(exc).__name__}: {exc})")
    else:
        for name in data.FILES_MD5:
            try:
                data.verify(names=(name,))
            except data.DataError as exc:
                problems.append(str(exc))
        checked["mnist"] = str(data.raw_dir())
    try:
        from . import classifier

        path = classifier.WEIGHTS_PATH
        if not path.is_file():
            problems.append(f"classifier weights {path} are missing (restore them from git)")
        elif (got := store.file_hash(path, "sha256")) != classifier.WEIGHTS_SHA256:
            problems.append(f"classifier weights {path} have SHA-256 {got}, expected {classifier.WEIGHTS_SHA256}")
        checked["classifier"] = str(path)
    except Exception as exc:
        problems.append(f"classifier weights not checked: {type(exc).__name__}: {exc}")
    if prof.inception_samples:
        try:
            from . import inception

            path = inception.weights_path()
            if not path.is_file():
                problems.append(
                    f"Inception-v3 weights {path} are missing (profile {profile} scores "
                    f"{prof.inception_samples} images with them; scripts/gpu_carry.sh carries them)"
                )
            elif (got := store.file_hash(path, "sha1")) != inception.SHA1:
                problems.append(f"Inception-v3 weights {path} have SHA-1 {got}, expected {inception.SHA1}")
            checked["inception"] = str(path)
        except Exception as exc:
            problems.append(f"Inception-v3 weights not checked: {type(exc).__name__}: {exc}")
    else:
        checked["inception"] = f"not needed (profile {profile} computes no Inception-v3 FID)"
    for what, folder in (("runs", config.RUNS_DIR), ("build", config.BUILD_DIR), ("out", out)):
        if folder is None:
            continue
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            problems.append(f"the {what} folder {folder} is not writable ({exc})")
    checked["seconds"] = round(time.perf_counter() - t0, 2)
    if problems:
        raise PreflightError(
            f"preflight of profile {profile} found {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
        )
    log(f"[preflight] {profile}: ok in {checked['seconds']} s ({checked})")
    return checked


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.device", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preflight", help="check data, weights and imports in seconds")
    p.add_argument("--profile", required=True, choices=sorted(config.PROFILES))
    p.add_argument("--workers-only", action="store_true", help="skip the pipeline's and notebooks' imports")
    p.add_argument("--out", type=Path)
    p = sub.add_parser("unpack", help="put what OUT folders brought back into place")
    p.add_argument("folders", nargs="+", type=Path)
    p = sub.add_parser("verify", help="check an OUT folder: limits, manifest, checksums")
    p.add_argument("folder", type=Path)
    p.add_argument("--max-files", type=int, default=MAX_FILES)
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    p = sub.add_parser("leftovers", help="pack a profile's results, figures and logs not packed yet")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--profile", required=True, choices=sorted(config.PROFILES))
    p.add_argument("--log", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.command == "preflight":
            preflight(args.profile, notebooks=not args.workers_only, out=args.out)
        elif args.command == "unpack":
            unpack(args.folders)
        elif args.command == "verify":
            problems = check_limits(args.folder, args.max_files, args.max_bytes)
            files = contents(args.folder)
            for p in problems:
                print(f"problem: {p}")
            print(f"{args.folder}: {len(files)} file(s) verified; {len(problems)} problem(s)")
            return 1 if problems else 0
        elif args.command == "leftovers":
            packer = Packer(args.out, log_file=args.log)
            log = args.log.resolve() if args.log else None
            files = [p for p in leftovers(args.profile) if p.resolve() != log]  # the log comes back whole
            entry = packer.add(f"leftovers {args.profile}", files, status="last resort")
            print(f"[out] leftovers: {len(entry['members'])} file(s) packed, {len(entry['unchanged'])} already there")
    except (PreflightError, PackError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
