"""Runs alembic inside the application's own interpreter (``phases.migrations.alembic.python``).

Executed as ``<app python> -c <this file's source>`` with the ini file's folder as working directory,
exactly as ``python -m alembic`` run from there: relative ``script_location`` and ``prepend_sys_path``
resolve as alembic resolves them, and ``env.py`` imports the app's modules from the app's environment.
Standard library only until alembic is imported, and no import of Rehearsal: the app's environment needs
nothing of Rehearsal's.

Request (JSON on stdin): ``{"ini", "section", "op", "url", "rev", "current", "ask"}``; ops:
``plan`` (pending revisions from the database's ``current`` heads to the script's heads, the heads, which
``ask`` ids the script knows), ``heads``, ``upgrade`` and ``downgrade`` (to ``rev``, on ``url``).
Answer: one line ``REHEARSAL-ALEMBIC {json}`` on stdout, the last one; ``{"missing_module": name}`` when
an import fails, ``{"error": message, "type": exception type}`` for anything else. The alembic CLI offers
no way to pass the database URL, and prints heads/history for people, hence this script rather than
``python -m alembic``.
"""

import json
import sys

MARK = "REHEARSAL-ALEMBIC "


def _one_line(exc: BaseException) -> dict:
    """The error as Rehearsal describes one in its own process: the driver's type and message."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("(Background on")]
    return {"error": (" ".join(lines[:2]) if lines else repr(exc))[:480], "type": type(orig or exc).__name__}


def _answer(obj: dict) -> None:
    sys.stdout.flush()
    sys.stdout.write("\n" + MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    req = json.loads(sys.stdin.read())
    try:
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config(req["ini"], ini_section=req.get("section") or "alembic")
        if req.get("url"):
            cfg.set_main_option("sqlalchemy.url", req["url"].replace("%", "%%"))
        op = req["op"]
        if op in ("plan", "heads"):
            script = ScriptDirectory.from_config(cfg)
            out: dict = {"heads": sorted(script.get_heads())}
            if op == "plan":
                revs = list(script.iterate_revisions("heads", tuple(req.get("current") or ()) or "base"))
                out["pending"] = [{"id": r.revision, "name": (r.doc or "").strip(),
                                   "down_revision": str(r.down_revision)} for r in reversed(revs)]
                known = {}
                for rid in req.get("ask") or []:
                    try:
                        known[rid] = script.get_revision(rid) is not None
                    except Exception:  # noqa: BLE001 - unknown or ambiguous id
                        known[rid] = False
                out["known"] = known
            _answer(out)
        elif op == "upgrade":
            command.upgrade(cfg, req["rev"])
            _answer({"ok": True})
        elif op == "downgrade":
            command.downgrade(cfg, req["rev"])
            _answer({"ok": True})
        else:
            _answer({"error": f"unknown op {op}"})
            return 2
    except ModuleNotFoundError as exc:
        _answer({"missing_module": exc.name or str(exc)})
        return 3
    except BaseException as exc:  # noqa: BLE001 - reported as one line, the caller decides
        _answer(_one_line(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
