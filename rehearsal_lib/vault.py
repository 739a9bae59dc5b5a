"""The release vault: `rehearse archive RUN_DIR DEST` — one verified tar.gz of a sealed run folder.

The folder must verify first (`seal.verify_run`: files, manifest, SHA256SUMS, reseal log, ledger). The
archive holds `<env>/<run-id>/…` and the environment's ledger `<env>.ledger.jsonl` beside it, laid out as
under outputs/, so the unpacked archive verifies on its own, ledger included. It is named
`<env>-<run-id>-<manifest digest, 12 hex>.tar.gz` and written to a local folder or any fsspec URL
(`memory://`, `s3://`, `gs://`… with the `vault` extra and the backend's own package), never replacing an
archive already there. Then it is read back from DEST, its bytes compared with what was written, unpacked
into a temporary folder and verified again; the manifest digest must be the one in its name.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rehearsal_lib.config import ConfigError

SUFFIX = ".tar.gz"
URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class ArchiveResult:
    """What `archive_run` did: where the archive is and what reading it back verified."""

    url: str
    name: str
    bytes: int
    sha256: str
    manifest_sha256: str
    files: int
    existed: bool = False
    problems: list[str] = field(default_factory=list)  # of the folder (nothing written) or of the read-back
    notes: list[str] = field(default_factory=list)
    written: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


class _Dest:
    """A local folder or an fsspec URL: the few operations the vault needs."""

    def __init__(self, dest: str):
        self.dest = dest
        if URL_RE.match(dest) and not dest.startswith("file://"):
            from rehearsal_lib import extras

            extras.require("vault", f"rehearse archive to {dest.split('://', 1)[0]}://")
            import fsspec  # type: ignore[import-untyped]  # no stubs, no py.typed

            try:
                self.fs, self.root = fsspec.core.url_to_fs(dest)
            except (ImportError, ValueError) as exc:  # a backend whose package is not installed, a bad URL
                raise ConfigError(dest, f"cannot use this destination: {exc}") from None
            self.local: Path | None = None
        else:
            self.fs, self.root = None, ""
            self.local = Path(dest.removeprefix("file://")).expanduser().resolve()

    def url(self, name: str) -> str:
        if self.local is not None:
            return str(self.local / name)
        return self.dest.rstrip("/") + "/" + name

    def _path(self, name: str) -> str:
        return self.root.rstrip("/") + "/" + name

    def exists(self, name: str) -> bool:
        if self.local is not None:
            return (self.local / name).exists()
        return bool(self.fs.exists(self._path(name)))

    def put(self, src: Path, name: str) -> None:
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
            tmp = self.local / f".{name}.partial"
            shutil.copyfile(src, tmp)
            os.replace(tmp, self.local / name)  # no half-written archive under the real name
            return
        self.fs.makedirs(self.root, exist_ok=True)
        with src.open("rb") as fh, self.fs.open(self._path(name), "wb") as out:
            shutil.copyfileobj(fh, out, 1 << 20)

    def open(self, name: str) -> IO[bytes]:
        if self.local is not None:
            return (self.local / name).open("rb")
        return self.fs.open(self._path(name), "rb")  # type: ignore[no-any-return]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def archive_name(env: str, run_id: str, manifest_sha256: str) -> str:
    """`<env>-<run-id>-<digest12>.tar.gz`."""
    return f"{env}-{run_id}-{manifest_sha256[:12]}{SUFFIX}"


def _build(run_dir: Path, ledger: Path | None, out: Path) -> int:
    """Write the tar.gz of the run folder (and the ledger beside it); return the number of run files."""
    env_dir = run_dir.parent.name
    count = 0
    with tarfile.open(out, "w:gz", dereference=True) as tar:
        for path in sorted(run_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=f"{env_dir}/{run_dir.name}/{path.relative_to(run_dir).as_posix()}",
                        recursive=False)
                count += 1
        if ledger is not None:
            from rehearsal_lib.seal import LEDGER_SUFFIX

            tar.add(ledger, arcname=env_dir + LEDGER_SUFFIX, recursive=False)
    return count


def _unpack(archive: Path, into: Path, env_dir: str, run_name: str) -> list[str]:
    """Unpack safely (only regular files and folders under the expected names); problems found."""
    from rehearsal_lib.seal import LEDGER_SUFFIX

    problems = []
    allowed_ledger = env_dir + LEDGER_SUFFIX
    prefix = f"{env_dir}/{run_name}/"
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        folders = {env_dir, prefix.rstrip("/")}
        for m in members:
            name = m.name.rstrip("/")
            inside = name == allowed_ledger or name.startswith(prefix) or (m.isdir() and name in folders)
            if not (m.isfile() or m.isdir()) or not inside or ".." in Path(name).parts or name.startswith("/"):
                problems.append(f"archive member {m.name!r}: not a file of {prefix}")
        if not problems:
            tar.extractall(into, members=members, filter="data")
    return problems


def verify_archive(fh: IO[bytes], expected_sha256: str | None, env_dir: str, run_name: str,
                   manifest_sha256: str, check_ledger: bool) -> tuple[list[str], list[str], str]:
    """Read an archive from `fh` and verify it: its bytes' digest (when expected), a clean unpack, `verify_run` on
    the unpacked folder, and the manifest digest. Returns (problems, notes, the archive's sha256)."""
    from rehearsal_lib.seal import MANIFEST, verify_run

    with tempfile.TemporaryDirectory(prefix="rehearsal-vault-") as tmp:
        local = Path(tmp) / "archive.tar.gz"
        with local.open("wb") as out:
            shutil.copyfileobj(fh, out, 1 << 20)
        digest = _sha256_file(local)
        if expected_sha256 is not None and digest != expected_sha256:
            return [f"the archive read back (sha256:{digest[:16]}…) is not the one written "
                    f"(sha256:{expected_sha256[:16]}…)"], [], digest
        try:
            problems = _unpack(local, Path(tmp) / "x", env_dir, run_name)
        except (tarfile.TarError, OSError, EOFError) as exc:
            return [f"the archive cannot be unpacked: {exc}"], [], digest
        if problems:
            return problems, [], digest
        unpacked = Path(tmp) / "x" / env_dir / run_name
        if not (unpacked / MANIFEST).is_file():
            return [f"the archive holds no {env_dir}/{run_name}/{MANIFEST}"], [], digest
        v = verify_run(unpacked, check_ledger=check_ledger)
        problems = list(v.problems)
        got = _sha256_file(unpacked / MANIFEST)
        if got != manifest_sha256:
            problems.append(f"the unpacked manifest.json (sha256:{got[:16]}…) is not the archived run's "
                            f"(sha256:{manifest_sha256[:16]}…)")
        inside = str(Path(tmp) / "x")  # the temporary folder means nothing once it is gone
        return problems, [n.replace(inside, "archive:") for n in v.notes], digest


def archive_run(run_dir: Path, dest: str, *, ledger: Path | None = None, check_ledger: bool = True) -> ArchiveResult:
    """Verify a sealed run folder, write its archive to `dest` (unless one of that name is there already), read it
    back and verify it. A folder that does not verify is refused: nothing is written, `problems` says why."""
    from rehearsal_lib.seal import MANIFEST, _identity, ledger_path, verify_run

    target = _Dest(dest)
    env, run_id = _identity(run_dir)
    ledger = ledger or ledger_path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        return ArchiveResult(target.url("?"), "?", 0, "", "", 0,
                             problems=[f"{run_dir}: not sealed (no {MANIFEST}): `rehearse report {run_dir}` seals it"])
    manifest_sha256 = _sha256_file(run_dir / MANIFEST)
    name = archive_name(env, run_id, manifest_sha256)
    v = verify_run(run_dir, ledger=ledger, check_ledger=check_ledger)
    if not v.intact:
        return ArchiveResult(target.url(name), name, 0, "", manifest_sha256, 0, problems=v.problems, notes=v.notes)
    with tempfile.TemporaryDirectory(prefix="rehearsal-vault-") as tmp:
        built = Path(tmp) / name
        count = _build(run_dir, ledger if check_ledger else None, built)
        written_sha = _sha256_file(built)
        size = built.stat().st_size
        existed = target.exists(name)
        expected: str | None = written_sha
        if existed:  # the vault keeps what it has: the archive there must verify on its own
            expected = None
        else:
            try:
                target.put(built, name)
            except OSError as exc:
                raise ConfigError(target.url(name), f"cannot write the archive: {exc}") from None
    result = ArchiveResult(target.url(name), name, size, written_sha, manifest_sha256, count, existed=existed,
                           written=not existed)
    try:
        with target.open(name) as fh:
            problems, notes, got = verify_archive(fh, expected, run_dir.parent.name, run_dir.name, manifest_sha256,
                                                  check_ledger)
    except OSError as exc:
        problems, notes, got = [f"cannot read the archive back from {target.url(name)}: {exc}"], [], ""
    result.sha256 = got or result.sha256
    result.problems, result.notes = problems, notes
    return result


def cmd_archive(args: argparse.Namespace) -> int:
    """`rehearse archive RUN_DIR DEST`: exit 0 written and verified, 1 when the folder or the read-back does not
    verify (the problems are printed), 2 on a usage error."""
    run_dir = Path(args.run_dir).resolve()
    if not (run_dir / "notebooks").is_dir():
        raise ConfigError(run_dir, "not a run folder (no notebooks/ inside)")
    ledger = Path(args.ledger).resolve() if args.ledger else None
    if ledger is not None and not ledger.is_file():
        raise ConfigError(ledger, "no such ledger file")
    res = archive_run(run_dir, args.dest, ledger=ledger, check_ledger=not args.no_ledger)
    if not res.bytes and res.problems:
        print(f"{run_dir}: refused, it does not verify ({len(res.problems)} problem(s)); nothing was written:")
        for p in res.problems:
            print(f"  {p}")
        return 1
    if res.existed:
        print(f"already in the vault (not replaced): {res.url} (sha256:{res.sha256})")
    else:
        print(f"wrote: {res.url} ({res.bytes} bytes, sha256:{res.sha256})")
    if res.problems:
        print(f"read back from {args.dest}: {len(res.problems)} problem(s):")
        for p in res.problems:
            print(f"  {p}")
        return 1
    print(f"verified: read back from {args.dest}, unpacked, {run_dir.parent.name}/{run_dir.name} intact "
          f"({res.files} files, ledger {'included' if not args.no_ledger else 'not archived'}); "
          f"manifest sha256:{res.manifest_sha256}")
    for note in res.notes:
        print(f"  note: {note}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> Any:
    """The `archive` subcommand's arguments."""
    p.add_argument("run_dir", help="a sealed run folder (outputs/<env>/<run-id>)")
    p.add_argument("dest", help="a local folder or an fsspec URL (memory://, s3://bucket/path …; pip install "
                                "'rehearsal[vault]' plus the backend's package)")
    p.add_argument("--ledger", metavar="PATH", help="the environment's ledger (default: <env>.ledger.jsonl next to "
                                                    "the folder of runs); archived beside the run")
    p.add_argument("--no-ledger", action="store_true",
                   help="neither check nor archive the ledger (the archive then only shows the folder consistent "
                        "with itself)")
    p.set_defaults(func=cmd_archive)
