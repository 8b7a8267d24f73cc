"""The one home of file I/O: atomic writes, locks, hashes, verified caches and cache keys.

Every module that writes or caches goes through here, so there is one definition of "written
safely", one of "verified when read" and one of "keyed by everything that decides it".

- `atomic_write_bytes` / `atomic_write_text`: temporary file beside the target, fsync, rename. A
  failure leaves the old file untouched and no temporary behind; temporaries left by a killed process
  are removed by `remove_stale_temporaries`.
- `write_verified` / `read_verified`: a file whose first line is the SHA-256 of the rest. Reading
  checks it; a mismatch raises `CorruptFile` (callers report it and recompute).
- `cached_json` / `cached_tensors`: a result computed once under a key, stored verified, recomputed
  (never used) when damaged, and locked so two processes never compute it twice at once.
- `code_hash`: the syntax trees of a set of `helpers` modules and everything they import from the
  package (the import-graph closure), so an edit anywhere that can change a result changes the key,
  while comments and formatting do not.
- `key_of`: a short stable hash of any JSON-able description.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
TMP_SUFFIX = ".tmp"
_TMP_RE = re.compile(r"^\..+\.(\d+)\.tmp(\.[A-Za-z0-9]+)?$")
_HEADER = b"sha256:"


class CorruptFile(RuntimeError):
    """A stored file failed its checksum or could not be decoded."""


def fresh_pending(path: Path, fresh: str | None) -> bool:
    """True when `fresh` is a token (`run_all.sh --fresh`: one new token per pipeline run; see
    `config.fresh_token`) and `path` has not been recomputed under it yet: within one fresh pipeline
    each result is recomputed once, then reused by later notebooks."""
    if not fresh:
        return False
    marker = Path(path).with_name(f".{Path(path).name}.fresh")
    try:
        return marker.read_text() != fresh
    except OSError:
        return True


def mark_fresh(path: Path, fresh: str | None) -> None:
    """Record that `path` was recomputed under the token `fresh` (nothing without one)."""
    if fresh:
        atomic_write_text(Path(path).with_name(f".{Path(path).name}.fresh"), fresh)


# --------------------------------------------------------------------------- writing
def temporary_name(path: Path) -> Path:
    """The temporary file a write to `path` goes through: hidden, tagged with this process id and
    keeping the suffix (so tools that pick a format by extension, like savefig, still work)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}{TMP_SUFFIX}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path to write `path` through; rename it over `path` on success.

    Whatever happens inside, either `path` is the complete new file or it is unchanged, and the
    temporary file is gone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: Path, recursive: bool = False) -> list[Path]:
    """Delete temporaries of `atomic_path` whose writing process no longer exists."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.rglob(".*") if recursive else folder.glob(".*"):
        m = _TMP_RE.match(p.name)
        if m and p.is_file() and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- hashes
def file_hash(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks (algorithm: any name hashlib knows)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bytes_hash(data: bytes, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, data).hexdigest()


def key_of(spec: Any, length: int = 12) -> str:
    """Short stable hash of a JSON-able description (dict keys sorted)."""
    text = json.dumps(spec, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def tensor_hash(t) -> str:
    """SHA-256 of a tensor's dtype, shape and contents (identity of a data set)."""
    import torch

    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}:".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------- verified files
def write_verified(path: Path, payload: bytes) -> Path:
    """Write `payload` atomically behind a header line holding its SHA-256."""
    return atomic_write_bytes(path, _HEADER + bytes_hash(payload).encode() + b"\n" + payload)


def read_verified(path: Path) -> bytes:
    """The payload of a file written by `write_verified`; CorruptFile when the check fails."""
    blob = Path(path).read_bytes()
    head, sep, payload = blob.partition(b"\n")
    if not sep or not head.startswith(_HEADER):
        raise CorruptFile(f"{path} has no checksum header (not written by this project, or cut short)")
    if head[len(_HEADER) :].decode("ascii", "replace") != bytes_hash(payload):
        raise CorruptFile(f"{path} fails its SHA-256 check (damaged or cut short)")
    return payload


# --------------------------------------------------------------------------- JSON
def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-able")


def to_plain(obj: Any, where: str = "result") -> Any:
    """A copy of `obj` made of JSON types only: numpy and torch scalars become Python numbers,
    tuples become lists. Anything else (arrays, tensors with more than one value, objects) is
    refused with an error naming where it sits."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            out[k] = to_plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    item = getattr(obj, "item", None)
    size = getattr(obj, "size", None)
    numel = getattr(obj, "numel", None)
    n = numel() if callable(numel) else size if isinstance(size, int) else None
    if callable(item) and n == 1:
        return to_plain(item(), where)
    raise TypeError(f"{where}: {type(obj).__name__} cannot be stored as JSON")


def _encode(obj: Any) -> Any:
    """Plain values -> JSON, keeping integer dict keys as integers (such a dict is stored as a list of pairs)."""
    if isinstance(obj, dict):
        if any(isinstance(k, int) for k in obj):
            return {"__items__": [[k, _encode(v)] for k, v in obj.items()]}
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__items__"}:
            return {k: _decode(v) for k, v in obj["__items__"]}
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(_encode(to_plain(obj)), indent=1, sort_keys=True, allow_nan=False)


def loads(text: str) -> Any:
    return _decode(json.loads(text))


def write_json(path: Path, obj: Any) -> Path:
    """Plain JSON for people and other programs (results files), written atomically."""
    text = json.dumps(to_plain(obj), indent=1, sort_keys=True, allow_nan=True, default=_json_default)
    return atomic_write_text(path, text + "\n")


def write_verified_json(path: Path, obj: Any) -> Path:
    return write_verified(path, dumps(obj).encode("utf-8"))


def read_verified_json(path: Path) -> Any:
    payload = read_verified(path)
    try:
        return loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptFile(f"{path} is not valid UTF-8 JSON ({exc})") from exc


# --------------------------------------------------------------------------- locks
@contextlib.contextmanager
def file_lock(lock_path: Path, what: str, log: Callable[[str], None] = print):
    """Exclusive lock on `lock_path`: a second process waits until the first is done.

    Where the folder cannot be written (a read-only cache), nobody can write a result there either,
    so the lock is skipped.
    """
    lock_path = Path(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_path, "a")  # noqa: SIM115 (closed by the `with f` below)
    except OSError:
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is working on {what}; waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- caches
def _cached(
    path: Path,
    compute: Callable[[], Any],
    read: Callable[[Path], Any],
    write: Callable[[Path, Any], Any],
    log: Callable[[str], None],
    fresh: str | None,
) -> Any:
    """The one cache protocol: under a lock, a verified stored value, else `compute()` stored."""
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock"), path.name, log):
        if path.is_file() and not fresh_pending(path, fresh):
            try:
                return read(path)
            except CorruptFile as exc:
                log(f"ignoring damaged cache file: {exc}; recomputing")
        result = compute()
        write(path, result)
        mark_fresh(path, fresh)
        return result


def cached_json(
    path: Path, compute: Callable[[], Any], log: Callable[[str], None] = print, fresh: str | None = None
) -> Any:
    """The result stored at `path` (written earlier under this exact key), or `compute()` stored there.

    The stored file is verified when read; a damaged one (checksum, encoding, JSON) is reported and
    recomputed, never used. What is returned is the same either way: integer keys stay integers.
    With a `fresh` token (`run_all.sh --fresh`) a stored result is recomputed once per token.
    """
    return _cached(path, lambda: loads(dumps(compute())), read_verified_json, write_verified_json, log, fresh)


def save_tensors(path: Path, payload: dict) -> Path:
    """A dict of tensors and plain values, saved verified (torch's format inside).

    The bytes are read back with the safe loader before anything is written: a payload that could
    not be loaded later (a numpy scalar, an arbitrary object) is refused here, at save time, with
    the reason, instead of producing a file that fails every later load."""
    import pickle

    import torch

    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        raise TypeError(
            f"refusing to write {path}: torch's safe loader could not read it back "
            f"({str(exc).strip().splitlines()[0][:300]})"
        ) from exc
    return write_verified(path, data)


def load_tensors(path: Path) -> dict:
    """Load what `save_tensors` wrote: checksum first, then torch's safe (weights-only) loader.
    Any failure is a CorruptFile."""
    import pickle

    import torch

    payload = read_verified(path)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise CorruptFile(
            f"{path} could not be loaded safely ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})"
        ) from exc


def cached_tensors(
    path: Path, compute: Callable[[], dict], log: Callable[[str], None] = print, fresh: str | None = None
) -> dict:
    """Like `cached_json` for dicts of tensors."""
    return _cached(path, compute, load_tensors, save_tensors, log, fresh)


# --------------------------------------------------------------------------- code keys
def _package_imports(tree: ast.AST, package: str) -> set[str]:
    """Names of the package's modules imported anywhere in `tree` (also inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(a.name for a in node.names)
            elif node.level == 0 and node.module and node.module.split(".")[0] == package:
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == package and len(parts) > 1:
                    found.add(parts[1])
    return found


# A module that sets `KEYED_BY_VALUE = True` holds tables and checks whose values enter every key as
# values (presets, profiles) or only moves bytes (this module): an edit to it decides no result, so
# code keys leave it out, and the import closure does not go through it.
KEYED_BY_VALUE = True


def _keyed_by_value(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "KEYED_BY_VALUE" for t in node.targets)
        and isinstance(node.value, ast.Constant)
        and node.value.value is True
        for node in tree.body
    )


def module_closure(roots: Iterable[str], folder: Path | None = None) -> list[str]:
    """The modules of the package in `folder` reachable from `roots` through imports, leaving out
    (and not following) modules marked KEYED_BY_VALUE."""
    folder = Path(folder or PACKAGE_DIR)
    package = folder.name
    todo, seen, found = list(roots), set(), []
    while todo:
        name = todo.pop()
        path = folder / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        tree = ast.parse(path.read_text())
        if _keyed_by_value(tree):
            continue
        found.append(name)
        todo.extend(_package_imports(tree, package) - seen)
    return sorted(found)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """`tree` with the docstring of every module, class and function removed (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _tree_text(source: str) -> str:
    return ast.dump(_without_docstrings(ast.parse(source)))


def code_hash(roots: Iterable[str], folder: Path | None = None, functions: Iterable[Callable] = ()) -> str:
    """Hash of the code that decides a result: the syntax trees of `roots` and every package module
    they import, directly or not (modules marked KEYED_BY_VALUE left out), plus the source of
    `functions` (the function that computes a derived result, wherever it lives).

    Comments, formatting and docstrings do not change it; any change to code that can run does.
    """
    import inspect
    import textwrap

    folder = Path(folder or PACKAGE_DIR)
    h = hashlib.sha256()
    for name in module_closure(roots, folder):
        h.update(name.encode() + b"\0" + _tree_text((folder / f"{name}.py").read_text()).encode() + b"\0")
    for fn in functions:
        source = textwrap.dedent(inspect.getsource(fn))
        h.update(fn.__qualname__.encode() + b"\0" + _tree_text(source).encode() + b"\0")
    return h.hexdigest()[:16]
