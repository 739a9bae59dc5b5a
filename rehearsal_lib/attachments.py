"""Evidence attachments (`evidence.attach` in params): files, globs and command outputs kept in the run folder.

At the end of a run (also when a phase crashed or the run broke off), before the folder is sealed, the
runner copies each attachment into `attachments/<name>/` and records what it found in run.json
(`attachments`: name, kind, source, required, status, files with sha256 and size, problem). The seal then
hashes the copies into the manifest like every other file; `collect()` turns each entry into a check
`run.evidence.<name>` (a required attachment that is missing is a failing blocker, an optional one is `skip`),
and the report lists them with links, sizes, digests and image thumbnails.

Paths and globs are relative to the project folder; a command runs there without a shell, its stdout is the
attachment (stderr is kept beside it), and every secret of the params file is scrubbed from both before
they are written.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from rehearsal_lib.params_base import MAX_SECONDS, Strict

if TYPE_CHECKING:
    from rehearsal_lib.runrecord import AttachmentRecord
    from rehearsal_lib.secrets import SecretSet

FOLDER = "attachments"
CHECK_PREFIX = "run.evidence."
IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                  ".webp": "image/webp", ".svg": "image/svg+xml"}
MAX_GLOB_FILES = 200  # files one glob may bring in; more is a problem, not a silent cut


class Attachment(Strict):
    """One piece of evidence to keep: exactly one of `path`, `glob` or `command`."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
                      description="Names the folder attachments/<name>/ and the check run.evidence.<name>.")
    title: str = Field("", description="What it is, in words for the report (default: the name).")
    path: str | None = Field(None, description="One file, relative to the project folder (or absolute).")
    glob: str | None = Field(None, description="Files matching a pattern (`**` for any depth), relative to the "
                                               "project folder; each kept with its path below the pattern's "
                                               "fixed leading folders.")
    command: str | None = Field(None, description="A command run in the project folder without a shell; its stdout "
                                                  "is kept (secrets scrubbed), its stderr beside it.")
    output: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                               description="With command: the file name of its output (default <name>.txt).")
    required: bool = Field(False, description="Missing (or a command that fails) is a failing blocker check.")
    timeout_s: float = Field(60.0, gt=0, le=MAX_SECONDS, description="With command: how long it may take.")
    max_mb: float = Field(50.0, gt=0, le=10_000, description="The most an attachment may weigh, all its files.")

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        given = [k for k in ("path", "glob", "command") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"evidence.attach entry {self.name!r}: give exactly one of path, glob or command "
                             f"(found {', '.join(given) or 'none'})")
        if self.output and not self.command:
            raise ValueError(f"evidence.attach entry {self.name!r}: output names a command's output file; "
                             "it goes with command")
        return self

    @property
    def kind(self) -> str:
        return "path" if self.path else "glob" if self.glob else "command"

    @property
    def source(self) -> str:
        return str(self.path or self.glob or self.command)


class EvidenceBlock(Strict):
    """`evidence:` in params: what to attach to the run folder besides the notebooks."""

    attach: list[Attachment] = Field(default_factory=list)

    @field_validator("attach")
    @classmethod
    def _unique(cls, value: list[Attachment]) -> list[Attachment]:
        seen: set[str] = set()
        for a in value:
            if a.name in seen:
                raise ValueError(f"evidence.attach: the name {a.name!r} is used twice (each names a folder)")
            seen.add(a.name)
        return value


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fixed_prefix(pattern: str) -> str:
    """The leading folders of a glob pattern without a wildcard: files are kept relative to it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if globlib.has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else ""


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _gather_files(a: Attachment, root: Path, dest: Path) -> tuple[list[tuple[Path, Path]], str | None]:
    """(source, destination) pairs for a path or glob attachment, or the reason there is nothing to copy."""
    if a.path:
        src = (root / os.path.expanduser(a.path))
        if not src.exists():
            return [], f"no file at {a.path}"
        if not src.is_file():
            return [], f"{a.path} is not a file"
        return [(src, dest / src.name)], None
    assert a.glob is not None
    pattern = os.path.expanduser(a.glob)
    base = root / _fixed_prefix(pattern)
    matches = sorted(Path(p) for p in globlib.glob(str(root / pattern), recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
        return [], f"no file matches {a.glob}"
    if len(files) > MAX_GLOB_FILES:
        return [], f"{len(files)} files match {a.glob}: more than {MAX_GLOB_FILES} (narrow the pattern)"
    pairs = []
    for p in files:
        try:
            rel = p.relative_to(base)
        except ValueError:
            rel = Path(p.name)
        pairs.append((p, dest / rel))
    return pairs, None


def _run_command(a: Attachment, root: Path, dest: Path, secrets: SecretSet) -> tuple[list[Path], str | None, dict]:
    """Run the attachment's command; (files written, problem or None, details for the record)."""
    assert a.command is not None
    from rehearsal_lib.probes.command import split

    out_name = a.output or f"{a.name}.txt"
    detail: dict[str, Any] = {"command": secrets.scrub(a.command)}
    t0 = time.perf_counter()
    try:
        argv = split(a.command)
        proc = subprocess.run(argv, cwd=root, stdin=subprocess.DEVNULL, capture_output=True, timeout=a.timeout_s,
                              check=False, start_new_session=True)
        stdout, stderr, code, problem = proc.stdout, proc.stderr, proc.returncode, None
        if code != 0:
            problem = f"`{shlex.split(a.command)[0]}` exited {code}"
    except (OSError, ValueError) as exc:  # not found, not executable, unbalanced quotes, unknown placeholder
        stdout, stderr, code = b"", b"", None
        problem = f"cannot run: {getattr(exc, 'strerror', None) or exc}"
    except subprocess.TimeoutExpired as exc:
        stdout, stderr, code = exc.stdout or b"", exc.stderr or b"", None
        problem = f"timed out after {a.timeout_s:g} s"
    detail.update(exit_code=code, duration_s=round(time.perf_counter() - t0, 3))
    if len(stdout) + len(stderr) > a.max_mb * 1e6:
        return [], f"output of {(len(stdout) + len(stderr)) / 1e6:.1f} MB: more than max_mb {a.max_mb:g}", detail
    written = []
    ran = code is not None  # a command that ran keeps its output, empty or not; a timed-out one what it wrote
    for data, name in ((stdout, out_name), (stderr, f"{out_name}.stderr.txt")):
        if not data and not (ran and name == out_name):
            continue
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / name
        try:  # text is scrubbed as it is written: no secret waits on disk for the end of the run
            path.write_text(secrets.scrub(data.decode("utf-8")), encoding="utf-8")
        except UnicodeDecodeError:
            path.write_bytes(data)  # binary output: the final sweep redacts it if it holds a secret
        written.append(path)
    if problem and stderr:
        tail = secrets.scrub(stderr.decode("utf-8", errors="replace")).strip().splitlines()[-3:]
        problem += ": " + " / ".join(tail)[:300] if tail else ""
    return written, problem, detail


def collect_attachments(run_dir: Path, block: EvidenceBlock | None, root: Path,
                        secrets: SecretSet | None = None) -> list[AttachmentRecord]:
    """Copy (or produce) every attachment into run_dir/attachments/ and say what was found; never raises for an
    attachment (each problem is recorded on its entry). A folder left by an earlier attempt is replaced."""
    from rehearsal_lib.runrecord import AttachmentFile, AttachmentRecord
    from rehearsal_lib.secrets import SecretSet

    secrets = secrets or SecretSet()
    folder = run_dir / FOLDER
    if folder.exists():
        shutil.rmtree(folder)
    records = []
    for a in (block.attach if block else []):
        dest = folder / a.name
        problem: str | None = None
        detail: dict[str, Any] = {}
        written: list[Path] = []
        try:
            if a.command:
                written, problem, detail = _run_command(a, root, dest, secrets)
            else:
                pairs, problem = _gather_files(a, root, dest)
                total = sum(src.stat().st_size for src, _ in pairs)
                if total > a.max_mb * 1e6:
                    problem, pairs = f"{total / 1e6:.1f} MB: more than max_mb {a.max_mb:g}", []
                for src, target in pairs:
                    _copy(src, target)
                    secrets.scrub_file(target)
                    written.append(target)
        except OSError as exc:
            problem = f"cannot copy: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": ")
        files = [AttachmentFile(path=p.relative_to(run_dir).as_posix(), sha256=_sha256(p), bytes=p.stat().st_size)
                 for p in written if p.is_file()]
        status = "failed" if problem and files else "missing" if problem else "attached"
        records.append(AttachmentRecord(name=a.name, title=a.title or a.name, kind=a.kind,
                                        source=secrets.scrub(a.source), required=a.required, status=status,
                                        problem=secrets.scrub(problem) if problem else None, files=files,
                                        **detail))
    return records


def attachment_checks(records: list[AttachmentRecord]) -> list[Any]:
    """One check `run.evidence.<name>` per attachment: `pass` when attached; a required one missing (or whose
    command failed) `fail` blocker; an optional one missing `skip` (info), recorded but not gating."""
    from rehearsal_lib.results import Check, Status

    out = []
    for r in records:
        what = f"{r.kind} {r.source}"
        if r.status == "attached":
            size = sum(f.bytes for f in r.files)
            status, observed = Status.PASS, f"{len(r.files)} file(s), {size} bytes, from {what}"
        elif r.required:
            status, observed = Status.FAIL, f"required attachment {r.status}: {r.problem}"
        else:
            status, observed = Status.SKIP, f"optional attachment {r.status}: {r.problem}"
        out.append(Check(id=f"{CHECK_PREFIX}{r.name}", phase="run", title=f"Evidence attached: {r.title}",
                         status=status, severity="blocker" if r.required else "info", observed=observed,
                         expected=(f"{what} copied into the run folder" if r.kind != "command"
                                   else f"`{r.source}` exits 0; its output kept in the run folder"),
                         evidence={"files": [f.model_dump() for f in r.files]} if r.files else None))
    return out


def attachment_rows(run_dir: Path, records: list[AttachmentRecord], max_inline: int = 2_000_000,
                    budget: int = 10_000_000) -> list[dict]:
    """The report's rows: one per file (or one per attachment with no file), images with a data: URI thumbnail
    when the copy in the folder still has the recorded digest and is at most `max_inline` bytes, until `budget`
    bytes of images are inlined (the others are linked only)."""
    import base64

    rows: list[dict] = []
    for r in records:
        base = {"name": r.name, "title": r.title, "kind": r.kind, "source": r.source, "required": r.required,
                "status": r.status, "problem": r.problem or ""}
        if not r.files:
            rows.append({**base, "path": "", "bytes": "", "sha256": "", "thumb": ""})
        for f in r.files:
            thumb = ""
            mime = IMAGE_SUFFIXES.get(Path(f.path).suffix.lower())
            p = run_dir / f.path
            if mime and f.bytes <= min(max_inline, budget) and p.is_file():
                data = p.read_bytes()
                if hashlib.sha256(data).hexdigest() == f.sha256:  # only what the record vouches for is shown
                    thumb = f"data:{mime};base64," + base64.b64encode(data).decode()
                    budget -= len(data)
            rows.append({**base, "path": f.path, "bytes": f"{f.bytes:,}", "sha256": f.sha256, "thumb": thumb})
    return rows
