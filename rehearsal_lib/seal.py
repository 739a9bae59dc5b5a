"""Sealing a run folder, and checking a seal: what `rehearse verify` and `rehearse report` rely on.

A seal is four things (docs/design.md, "Evidence: what an auditor can and cannot conclude"):

- `manifest.json` (sha256 and size of every file) and `SHA256SUMS` (the same digests plus the
  manifest's own, for `sha256sum -c`), written by `evidence.write_manifest`;
- `reseal.log` in the run folder: one hash-chained JSON line per rebuild of a sealed folder (who,
  when, why, the archived old manifest `manifest.N.json`, the files that had changed);
- `<env>.ledger.jsonl` beside the environment's folder of runs (`outputs/<env>.ledger.jsonl`, outside
  every run folder and outside `outputs/<env>/`, which holds only run folders): one hash-chained JSON
  line per seal (run id, manifest digest); the entry's digest is printed as the run's last line;
- optionally `manifest.sig`: an Ed25519 signature of manifest.json's bytes with the private key at
  `$REHEARSAL_SIGNING_KEY` (a PEM file).

Every chained entry holds `prev_sha256` (the previous entry's `entry_sha256`, 64 zeros for the first)
and `entry_sha256`, the sha256 of its own canonical JSON without that field.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearsal_lib.config import ConfigError
from rehearsal_lib.evidence import (
    SIGNATURE,
    SUMS,
    read_manifest,
    sha256_file,
    verify_manifest,
    write_manifest,
)
from rehearsal_lib.people import PEOPLE_LOG
from rehearsal_lib.runrecord import RunRecord, read_run_record

MANIFEST = "manifest.json"
RESEAL_LOG = "reseal.log"
LEDGER_SUFFIX = ".ledger.jsonl"
SIGNING_KEY_ENV = "REHEARSAL_SIGNING_KEY"
SIGNING_PASSPHRASE_ENV = "REHEARSAL_SIGNING_KEY_PASSPHRASE"
GENESIS = "0" * 64
ARCHIVED_MANIFEST = re.compile(r"^manifest\.(\d+)\.json$")
INTACT_REBUILD = "rebuilt the derived files; the folder verified intact"


class SealError(ConfigError):
    """Sealing or checking cannot proceed: an unusable key file, a ledger that cannot be written (exit 2)."""


class SealRefused(Exception):
    """`rehearse report` on a folder whose seal no longer verifies, without --reseal --reason."""

    def __init__(self, run_dir: Path, problems: list[str]):
        self.run_dir, self.problems = run_dir, problems
        super().__init__(f"{run_dir}: no longer matches its seal; nothing was rewritten")


# -- hash chains (reseal.log and the ledger) ----------------------------------------------------

def entry_digest(entry: dict[str, Any]) -> str:
    """sha256 of an entry's canonical JSON, without its own `entry_sha256`."""
    body = {k: v for k, v in entry.items() if k != "entry_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_chain(path: Path, label: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The entries of a hash-chained JSON-lines file and one problem line per broken link."""
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    prev, expected_seq = GENESIS, 1
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            problems.append(f"{label} line {n}: not a JSON entry (the file was edited)")
            prev, expected_seq = hashlib.sha256(line.encode()).hexdigest(), expected_seq + 1
            continue
        seq = entry.get("seq")
        wrong = []
        if seq != expected_seq:
            wrong.append(f"seq {seq} where {expected_seq} was expected (an entry was removed or inserted)")
        if entry.get("prev_sha256") != prev:
            wrong.append("its previous-entry digest does not match the entry before it")
        if entry_digest(entry) != entry.get("entry_sha256"):
            wrong.append("its digest does not match its content (the entry was edited)")
        if wrong:
            problems.append(f"{label} line {n} (#{seq}): " + "; ".join(wrong))
        entries.append(entry)
        prev = str(entry.get("entry_sha256"))
        expected_seq = seq + 1 if isinstance(seq, int) else expected_seq + 1
    return entries, problems


def append_chained(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append `record` as the next entry of a hash-chained JSON-lines file (locked; never rewrites)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        lines = [line for line in fh.read().splitlines() if line.strip()]
        seq, prev = 1, GENESIS
        if lines:
            try:
                last = json.loads(lines[-1])
                seq, prev = int(last["seq"]) + 1, str(last["entry_sha256"])
            except (ValueError, KeyError, TypeError):  # a damaged last line: chain to its bytes; verify reports it
                seq, prev = len(lines) + 1, hashlib.sha256(lines[-1].encode()).hexdigest()
        entry = {"seq": seq, **record, "prev_sha256": prev}
        entry["entry_sha256"] = entry_digest(entry)
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return entry


def reseal_history(run_dir: Path) -> list[dict[str, Any]]:
    """The reseal log's entries as recorded (for the report; `verify` checks the chain)."""
    path = run_dir / RESEAL_LOG
    return read_chain(path, RESEAL_LOG)[0] if path.is_file() else []


def ledger_path(run_dir: Path) -> Path:
    """The environment's ledger, outputs/<env>.ledger.jsonl for a run folder outputs/<env>/<run-id>."""
    return run_dir.parent.parent / (run_dir.parent.name + LEDGER_SUFFIX)


def _identity(run_dir: Path) -> tuple[str, str]:
    try:
        record = read_run_record(run_dir)
    except ValueError:  # an unreadable run.json: the folder's names identify it (verify reports the file)
        record = RunRecord()
    return record.env or run_dir.parent.name, record.run_id or run_dir.name


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# -- signing ------------------------------------------------------------------------------------

def load_signing_key() -> Any | None:
    """The Ed25519 private key at $REHEARSAL_SIGNING_KEY (PEM), or None when the variable is unset."""
    location = os.environ.get(SIGNING_KEY_ENV)
    if not location:
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = Path(location).read_bytes()
    except OSError as exc:
        raise SealError(f"${SIGNING_KEY_ENV}={location}", f"cannot read the signing key: {exc.strerror}") from None
    passphrase = os.environ.get(SIGNING_PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        raise SealError(f"${SIGNING_KEY_ENV}={location}", f"not a usable PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SealError(f"${SIGNING_KEY_ENV}={location}", "not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Any:
    """An Ed25519 public key from a PEM file; SealError when it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise SealError(path, f"cannot read the public key: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise SealError(path, f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SealError(path, "not an Ed25519 public key")
    return key


def key_fingerprint(public_key: Any) -> str:
    """sha256 of the raw 32-byte Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _sign(run_dir: Path, key: Any) -> str:
    data = (run_dir / MANIFEST).read_bytes()
    fingerprint = key_fingerprint(key.public_key())
    sig = {"algorithm": "ed25519", "signed_file": MANIFEST, "manifest_sha256": hashlib.sha256(data).hexdigest(),
           "public_key_sha256": fingerprint, "signature": base64.b64encode(key.sign(data)).decode()}
    (run_dir / SIGNATURE).write_text(json.dumps(sig, indent=2) + "\n")
    return fingerprint


def _check_signature(manifest: Path, sig_path: Path, public_key: Any) -> str | None:
    """None when `sig_path` is a valid signature of `manifest` by `public_key`, else the problem."""
    from cryptography.exceptions import InvalidSignature

    name = sig_path.name
    if not sig_path.is_file():
        return f"{name}: missing: {manifest.name} is not signed"
    try:
        sig = json.loads(sig_path.read_text())
        signature = base64.b64decode(sig["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        return f"{name}: not a signature file (unreadable)"
    try:
        public_key.verify(signature, manifest.read_bytes())
    except InvalidSignature:
        signer = str(sig.get("public_key_sha256", "?"))
        return (f"{name}: the signature does not verify with the given public key (key sha256:"
                f"{key_fingerprint(public_key)[:16]}…; the file names key sha256:{signer[:16]}…)")
    return None


# -- sealing ------------------------------------------------------------------------------------

@dataclass
class SealRecord:
    """What sealing produced: the manifest's digest and the ledger entry that anchors it."""

    env: str
    manifest_sha256: str
    ledger: Path
    entry: dict[str, Any]
    signed_by: str | None = None

    def line(self) -> str:
        """The run's last printed line, for a CI log to anchor the ledger."""
        return (f"ledger: {self.env} #{self.entry['seq']} manifest sha256:{self.manifest_sha256} "
                f"entry sha256:{self.entry['entry_sha256']}")


def seal(run_dir: Path) -> SealRecord:
    """Write manifest.json and SHA256SUMS, sign when a key is configured, and append to the ledger."""
    key = load_signing_key()
    env, run_id = _identity(run_dir)
    history = reseal_history(run_dir)
    header = {"env": env, "run_id": run_id, "sealed_at": _now(), "reseals": len(history),
              "reseal_log_sha256": history[-1].get("entry_sha256") if history else None}
    manifest = write_manifest(run_dir, header)
    (run_dir / SIGNATURE).unlink(missing_ok=True)
    signed_by = _sign(run_dir, key) if key is not None else None
    digest = sha256_file(manifest)
    ledger = ledger_path(run_dir)
    try:
        entry = append_chained(ledger, {"time": header["sealed_at"], "env": env, "run_id": run_id,
                                        "manifest_sha256": digest, "reseals": len(history),
                                        "signed_by": signed_by})
    except OSError as exc:
        raise SealError(ledger, f"cannot append to the ledger: {exc.strerror}") from None
    return SealRecord(env, digest, ledger, entry, signed_by)


def open_for_rebuild(run_dir: Path, reseal_reason: str | None = None,
                     purpose: str | None = None) -> dict[str, Any] | None:
    """Before derived files are rebuilt in a sealed folder: refuse, or archive the seal and log why.

    A folder that was never sealed (no manifest, no reseal log, not in the ledger) returns None. A
    sealed folder that no longer verifies raises SealRefused unless `reseal_reason` is given. Otherwise
    manifest.json (and manifest.sig) are kept as manifest.N.json (.sig) and an entry with who, when,
    why (`purpose`, then `reseal_reason`) and the changed files is appended to reseal.log; the entry is
    returned. `purpose` alone never reseals a changed folder.
    """
    ledger = ledger_path(run_dir)
    _, run_id = _identity(run_dir)
    in_ledger = ledger.is_file() and any(e.get("run_id") == run_id for e in read_chain(ledger, "ledger")[0])
    if not (run_dir / MANIFEST).exists() and not (run_dir / RESEAL_LOG).exists() and not in_ledger:
        return None
    problems = verify_run(run_dir).problems
    if problems and reseal_reason is None:
        raise SealRefused(run_dir, problems)
    from rehearsal_lib.runner import executed_by

    taken = {int(m.group(1)) for p in run_dir.iterdir() if (m := ARCHIVED_MANIFEST.match(p.name))}
    n = max(taken | {len(reseal_history(run_dir))}) + 1
    old_name, old_digest = None, None
    if (run_dir / MANIFEST).is_file():
        old_name = f"manifest.{n}.json"
        old_digest = sha256_file(run_dir / MANIFEST)
        os.replace(run_dir / MANIFEST, run_dir / old_name)
        if (run_dir / SIGNATURE).is_file():
            os.replace(run_dir / SIGNATURE, run_dir / f"manifest.{n}.sig")
    (run_dir / SUMS).unlink(missing_ok=True)
    why = "; ".join(filter(None, (purpose, reseal_reason))) or INTACT_REBUILD
    return append_chained(run_dir / RESEAL_LOG, {
        "time": _now(), "who": executed_by(), "why": why,
        "kind": "reseal" if problems else "rebuild", "old_manifest": old_name, "old_manifest_sha256": old_digest,
        "changed": problems})


# -- verification -------------------------------------------------------------------------------

@dataclass
class Verification:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def _check_sums(run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    path = run_dir / SUMS
    if not path.is_file():
        return [f"{SUMS} is missing"]
    listed: dict[str, str] = {}
    problems = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest):
            problems.append(f"{SUMS} line {n}: not a 'sha256  path' line")
            continue
        listed[rel] = digest
    expected = {rel: str(info.get("sha256")) for rel, info in manifest["files"].items() if isinstance(info, dict)}
    expected[MANIFEST] = sha256_file(run_dir / MANIFEST)
    for rel, digest in sorted(expected.items()):
        if rel not in listed:
            problems.append(f"{SUMS}: {rel} is not listed")
        elif listed[rel] != digest:
            what = "the manifest.json on disk" if rel == MANIFEST else "manifest.json"
            problems.append(f"{SUMS}: {rel}: digest differs from {what}")
    problems += [f"{SUMS}: {rel} is listed but not in manifest.json" for rel in sorted(set(listed) - set(expected))]
    return problems


def _check_reseal_log(run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    path = run_dir / RESEAL_LOG
    archives = sorted(p.name for p in run_dir.iterdir() if ARCHIVED_MANIFEST.match(p.name))
    recorded = manifest.get("reseals")
    if not path.is_file():
        problems = [f"{name}: an archived manifest that no {RESEAL_LOG} accounts for" for name in archives]
        if recorded:
            problems.append(f"{RESEAL_LOG} is missing (manifest.json records {recorded} reseal(s))")
        return problems
    entries, problems = read_chain(path, RESEAL_LOG)
    named = set()
    for e in entries:
        old = e.get("old_manifest")
        if old is None:
            continue
        named.add(old)
        if not isinstance(old, str) or not ARCHIVED_MANIFEST.match(old) or not (run_dir / old).is_file():
            problems.append(f"{RESEAL_LOG} #{e.get('seq')}: names the old manifest {old}, which is missing")
        elif sha256_file(run_dir / old) != e.get("old_manifest_sha256"):
            problems.append(f"{RESEAL_LOG} #{e.get('seq')}: {old} differs from the digest the log recorded")
    problems += [f"{name}: an archived manifest that {RESEAL_LOG} does not name" for name in archives
                 if name not in named]
    head = entries[-1].get("entry_sha256") if entries else None
    if recorded != len(entries) or manifest.get("reseal_log_sha256") != head:
        problems.append(f"{RESEAL_LOG}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} but manifest.json "
                        f"was sealed after {recorded or 0} (the log was truncated, extended or replaced)")
    return problems


def _expected_digest(expect: str) -> str | None:
    """The entry digest in a printed 'ledger: ... entry sha256:<hex>' line, or a bare digest."""
    found = re.search(r"entry sha256:([0-9a-f]{64})", expect) or re.fullmatch(r"\s*(?:sha256:)?([0-9a-f]{64})\s*",
                                                                               expect)
    return found.group(1) if found else None


def _check_ledger(run_dir: Path, ledger: Path, manifest_digest: str, notes: list[str],
                  expect: str | None = None) -> list[str]:
    if not ledger.is_file():
        return [f"no ledger at {ledger}: the run cannot be checked against it "
                "(rehearse verify takes --ledger PATH, or --no-ledger to check the folder alone)"]
    entries, problems = read_chain(ledger, f"ledger {ledger.name}")
    _, run_id = _identity(run_dir)
    mine = [e for e in entries if e.get("run_id") == run_id]
    if not mine:
        return [*problems, f"run {run_id} is not in the ledger {ledger}: its seal is not anchored"]
    last = mine[-1]
    if expect is not None:
        wanted = _expected_digest(expect)
        if wanted is None:
            problems.append(f"--expect {expect!r}: no 'entry sha256:<64 hex>' in it")
        elif last.get("entry_sha256") != wanted:
            where = next((f"#{e.get('seq')} of run {e.get('run_id')}" for e in entries
                          if e.get("entry_sha256") == wanted), "no entry")
            problems.append(f"the ledger's last entry for this run (#{last.get('seq')}, sha256:"
                            f"{str(last.get('entry_sha256'))[:16]}…) is not the expected entry sha256:{wanted[:16]}… "
                            f"(the ledger has {where} with that digest)")
    if last.get("manifest_sha256") != manifest_digest:
        problems.append(f"manifest.json (sha256:{manifest_digest[:16]}…) is not the manifest the ledger sealed "
                        f"last for this run (#{last.get('seq')}, sha256:{str(last.get('manifest_sha256'))[:16]}…)")
    signer = last.get("signed_by")
    if signer and last.get("manifest_sha256") == manifest_digest:
        try:
            named = json.loads((run_dir / SIGNATURE).read_text()).get("public_key_sha256")
        except (OSError, ValueError, AttributeError):
            named = None
        if named != signer:
            problems.append(f"the ledger records this seal as signed by key sha256:{str(signer)[:16]}…, but "
                            f"{SIGNATURE} is {'missing or unreadable' if named is None else 'by another key'}")
    held = {sha256_file(p) for p in run_dir.iterdir() if ARCHIVED_MANIFEST.match(p.name)} | {manifest_digest}
    for e in mine[:-1]:
        if e.get("manifest_sha256") not in held:
            problems.append(f"ledger #{e.get('seq')} sealed a manifest of this run that the folder no longer holds "
                            f"(sha256:{str(e.get('manifest_sha256'))[:16]}…)")
    notes.append(f"ledger: {last.get('env')} #{last.get('seq')} manifest sha256:{last.get('manifest_sha256')} "
                 f"entry sha256:{last.get('entry_sha256')} ({ledger})")
    return problems


def verify_run(run_dir: Path, *, ledger: Path | None = None, check_ledger: bool = True,
               public_key: Any | None = None, expect_entry: str | None = None) -> Verification:
    """Check that the files, manifest.json, SHA256SUMS, reseal.log, the ledger and (with a public
    key) manifest.sig all agree; `expect_entry` is the run's ledger line from a CI log. Each problem
    is one line."""
    v = Verification()
    manifest = read_manifest(run_dir)
    v.problems += verify_manifest(run_dir)
    if manifest is None:
        return v
    v.problems += _check_sums(run_dir, manifest)
    v.problems += _check_reseal_log(run_dir, manifest)
    if (run_dir / PEOPLE_LOG).is_file():  # attestations and sign-offs: append-only, hash-chained
        v.problems += read_chain(run_dir / PEOPLE_LOG, PEOPLE_LOG)[1]
    digest = sha256_file(run_dir / MANIFEST)
    if check_ledger:
        v.problems += _check_ledger(run_dir, ledger or ledger_path(run_dir), digest, v.notes, expect_entry)
    else:
        v.notes.append("ledger not checked (--no-ledger): the folder is only consistent with itself")
    if public_key is not None:
        pairs = [(run_dir / MANIFEST, run_dir / SIGNATURE)]
        pairs += [(p, p.with_suffix(".sig")) for p in sorted(run_dir.iterdir())
                  if ARCHIVED_MANIFEST.match(p.name) and p.with_suffix(".sig").is_file()]
        v.problems += [p for m, s in pairs if (p := _check_signature(m, s, public_key))]
        if not v.problems:
            v.notes.append(f"manifest.json signed by key sha256:{key_fingerprint(public_key)}")
    elif (run_dir / SIGNATURE).is_file():
        v.notes.append(f"{SIGNATURE} present but not checked (pass --public-key PEM)")
    return v
