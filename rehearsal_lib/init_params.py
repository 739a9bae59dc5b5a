"""`rehearse init NAME --base-url URL`: a first params file from what a running service says about itself.

It reads, and only reads: the OpenAPI document (GET; a file also works), GET answers of the health, ready and
version candidates it finds there, the Prometheus text at the metrics path (GET), and — when
`--database-url-env VAR` names a set variable — the database catalogue in a read-only session with a statement
timeout. It never sends anything but GET and writes nothing but `params/NAME.yaml`: a commented file that
`rehearse validate NAME` accepts as written, with secrets only as `${VAR}` references and a `TODO` where a
person must decide. It prints what it found and what it could not decide.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

SAFE = "GET"
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
HEALTH_RE = re.compile(r"(^|/)(health|healthz|livez|liveness|ping|status)/?$", re.I)
READY_RE = re.compile(r"(^|/)(ready|readyz|readiness)/?$", re.I)
VERSION_RE = re.compile(r"(^|/)(version|build|info)/?$", re.I)
CREDENTIAL_PARAM_RE = re.compile(r"api[-_]?key|token|authorization|secret|session", re.I)
READY_GAUGE_RE = re.compile(r"(ready|readiness|healthy|up)$", re.I)
SKIP_METRIC_PREFIXES = ("python_", "process_", "go_", "promhttp_")
# probed (GET) when the OpenAPI document does not list health, ready or version operations
CANDIDATES = ("/health", "/healthz", "/livez", "/ready", "/readyz", "/v1/ready", "/api/ready", "/version",
              "/v1/version", "/api/version")
MAX_JOURNEY = 5
MAX_SERIES = 8
MAX_TABLES = 40


class InitError(Exception):
    """A usage problem (exit 2): an existing file without --force, an unreadable OpenAPI file."""


def q(value: Any) -> str:
    """A YAML scalar or flow collection (JSON is valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def env_name(*parts: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(parts).upper()).strip("_")


@dataclass
class Report:
    """What init found and what it left to a person; every request it sent (method, URL, status)."""

    found: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, int | None]] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)  # ${VAR} the file reads -> what it is


class ReadOnlyClient:
    """GET only: the one way init talks to the target (every request recorded)."""

    def __init__(self, base_url: str, report: Report, timeout: float = 5.0):
        self.base = base_url.rstrip("/")
        self.report = report
        self.client = httpx.Client(timeout=timeout, follow_redirects=False, verify=True)

    def get(self, where: str) -> httpx.Response | None:
        url = where if where.startswith(("http://", "https://")) else self.base + where
        try:
            res = self.client.get(url)
        except httpx.HTTPError as exc:
            self.report.requests.append((SAFE, url, None))
            self.report.undecided.append(f"GET {url}: no answer ({type(exc).__name__})")
            return None
        self.report.requests.append((SAFE, url, res.status_code))
        return res

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------------------------ OpenAPI


@dataclass
class Operation:
    method: str
    path: str
    op: dict[str, Any]
    security: list[str]  # names of the security schemes it requires (any of them); [] = none

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def credential_params(self) -> list[str]:
        """Header, query or cookie parameters whose name says they carry a credential (an API key taken as a
        plain parameter, not declared as a security scheme)."""
        return [p["name"] for p in self.op.get("parameters", []) if isinstance(p, dict)
                and p.get("in") in ("header", "query", "cookie") and CREDENTIAL_PARAM_RE.search(str(p.get("name")))]

    def concrete_path(self) -> str | None:
        """The path with example values in its parameters and required query parameters; None when a required
        parameter (path, query, header) has no example."""
        path, query = self.path, []
        for p in self.op.get("parameters", []):
            if not isinstance(p, dict):
                continue
            example = p.get("example", (p.get("schema") or {}).get("example", (p.get("schema") or {}).get("default")))
            where, required = p.get("in"), p.get("required", p.get("in") == "path")
            if not required:
                continue
            if example is None or where not in ("path", "query"):
                return None
            if where == "path":
                path = path.replace("{" + p["name"] + "}", str(example))
            else:
                query.append(f"{p['name']}={example}")
        if "{" in path:
            return None
        return path + ("?" + "&".join(query) if query else "")


def load_openapi(client: ReadOnlyClient, ref: str | None, report: Report) -> tuple[dict[str, Any] | None, str]:
    """The document from a file, a URL or a path on the base URL (default `/openapi.json`)."""
    where = ref or "/openapi.json"
    if ref and not ref.startswith(("http://", "https://")) and Path(ref).is_file():
        text = Path(ref).read_text(encoding="utf-8")
    else:
        res = client.get(where)
        if res is None or res.status_code != 200:
            report.undecided.append(f"no OpenAPI document at {where} (HTTP {res.status_code if res else 'none'}): "
                                    "operations, principals, protected endpoints and the journey were not derived; "
                                    "give --openapi URL_OR_FILE")
            return None, where
        text = res.text
    try:
        doc = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InitError(f"{where}: not JSON or YAML ({exc})") from None
    if not isinstance(doc, dict) or "paths" not in doc:
        report.undecided.append(f"{where} is not an OpenAPI document (no `paths`)")
        return None, where
    return doc, where


def operations_of(doc: dict[str, Any]) -> list[Operation]:
    default_sec = [name for req in doc.get("security", []) or [] for name in req]
    out = []
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method.upper() not in METHODS or not isinstance(op, dict):
                continue
            op = {**op, "parameters": [*shared, *op.get("parameters", [])]}
            sec = op.get("security")
            names = default_sec if sec is None else [name for req in sec for name in req]
            out.append(Operation(method.upper(), path, op, names))
    return out


def principals_from(doc: dict[str, Any], env: str, report: Report) -> dict[str, dict[str, Any]]:
    """Security schemes -> target.auth principals, every secret a ${VAR}; name -> (principal, comment)."""
    schemes = ((doc.get("components") or {}).get("securitySchemes") or doc.get("securityDefinitions") or {})
    out: dict[str, dict[str, Any]] = {}
    for scheme_name, s in schemes.items():
        if not isinstance(s, dict):
            continue
        name = slug(scheme_name)[:64]
        if not re.match(r"^[a-z]", name) or name == "anonymous":
            name = "p_" + name
        kind, http = s.get("type"), str(s.get("scheme", "")).lower()
        var = partial(env_name, env, name)
        if kind == "http" and http == "bearer":
            out[name] = {"scheme": "bearer", "token": f"${{{var('token')}}}"}
            report.variables[var("token")] = f"a bearer token for {scheme_name}"
        elif kind == "http" and http == "basic":
            out[name] = {"scheme": "basic", "username": "rehearsal", "password": f"${{{var('password')}}}",
                         "#": "TODO: the user name the rehearsal signs in as"}
            report.variables[var("password")] = f"the password of that user ({scheme_name})"
        elif kind == "apiKey" and s.get("in") in ("header", "query"):
            where = "header" if s["in"] == "header" else "query"
            out[name] = {"scheme": "api_key", where: s.get("name", "X-API-Key"), "key": f"${{{var('key')}}}"}
            report.variables[var("key")] = f"the API key for {scheme_name}"
        elif kind == "oauth2" and "password" in (s.get("flows") or {}):
            out[name] = {"scheme": "oauth2_password", "token_url": s["flows"]["password"].get("tokenUrl", "/token"),
                         "username": "rehearsal", "password": f"${{{var('password')}}}",
                         "#": "TODO: the account the rehearsal logs in as (a user made for rehearsals)"}
            report.variables[var("password")] = f"the password of that account ({scheme_name})"
        elif kind == "oauth2" and "clientCredentials" in (s.get("flows") or {}):
            out[name] = {"scheme": "oauth2_client_credentials",
                         "token_url": s["flows"]["clientCredentials"].get("tokenUrl", "/oauth/token"),
                         "client_id": "rehearsal", "client_secret": f"${{{var('client_secret')}}}",
                         "#": "TODO: the client id registered for rehearsals"}
            report.variables[var("client_secret")] = f"the client secret ({scheme_name})"
        else:
            report.undecided.append(f"security scheme {scheme_name!r} ({kind} {http or s.get('in', '')}) has no "
                                    "principal here: write one by hand (docs/params.md, Principals)")
            continue
        report.found.append(f"security scheme {scheme_name!r} -> principal {name} ({out[name]['scheme']})")
        out[name]["_scheme"] = scheme_name
    return out


def scheme_principal(op: Operation, principals: dict[str, dict[str, Any]]) -> str | None:
    for name, p in principals.items():
        if p["_scheme"] in op.security:
            return name
    return None


# ------------------------------------------------------------------------------------------ probes


def probe_endpoints(client: ReadOnlyClient, ops: list[Operation], report: Report) -> dict[str, Any]:
    """Health, ready and version candidates among the GET operations without parameters: the first that
    answers 2xx (anonymously) wins; the version's JSON path is found in its answer."""
    found: dict[str, Any] = {}
    plain = [o for o in ops if o.method == "GET" and o.concrete_path() == o.path]
    for kind, rx in (("health", HEALTH_RE), ("ready", READY_RE), ("version", VERSION_RE)):
        listed = sorted((o for o in plain if rx.search(o.path)), key=lambda o: len(o.path))
        guessed = [Operation("GET", c, {}, []) for c in CANDIDATES if rx.search(c)]
        for o in listed or guessed:  # the document's own, else the usual paths
            res = client.get(o.path)
            if res is None or not 200 <= res.status_code < 300:
                continue
            if kind == "version":
                try:
                    body = res.json()
                except ValueError:
                    continue
                path = version_path(body)
                if path is None:
                    continue
                found["version"] = (o.path, path, json_at(body, path))
            else:
                found[kind] = o.path
            report.found.append(f"{kind} endpoint {o.path} (HTTP {res.status_code})")
            break
        else:
            where = "among the document's GET operations" if listed else f"at {', '.join(o.path for o in guessed)}"
            report.undecided.append(f"no {kind} endpoint answering 2xx {where}")
    return found


def version_path(body: Any, prefix: str = "$") -> str | None:
    if isinstance(body, dict):
        if isinstance(body.get("version"), str):
            return f"{prefix}.version"
        for key, value in body.items():
            if isinstance(value, dict) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                found = version_path(value, f"{prefix}.{key}")
                if found:
                    return found
    return None


def json_at(body: Any, path: str) -> Any:
    for part in path.split(".")[1:]:
        body = body.get(part) if isinstance(body, dict) else None
    return body


def read_metrics(client: ReadOnlyClient, path: str, explicit: bool, report: Report) -> list[tuple[str, str, float]]:
    """(family, type, first value) of the Prometheus text at `path`."""
    res = client.get(path)
    if res is None or res.status_code != 200:
        (report.undecided if explicit else report.found).append(
            f"no Prometheus metrics at {path} (HTTP {res.status_code if res else 'none'}): no observability block")
        return []
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = [(f.name, f.type, f.samples[0].value if f.samples else 0.0)
                    for f in text_string_to_metric_families(res.text)]
    except ValueError as exc:
        report.undecided.append(f"{path} is not Prometheus text ({exc})")
        return []
    report.found.append(f"{len(families)} metric families at {path}")
    return families


# ------------------------------------------------------------------------------------------ database


@dataclass
class Catalogue:
    tables: dict[str, int] = field(default_factory=dict)  # schema-qualified unless public -> rows
    primary_keys: list[tuple[str, list[str]]] = field(default_factory=list)
    unique: list[tuple[str, list[str]]] = field(default_factory=list)
    foreign_keys: list[tuple[str, list[str], str]] = field(default_factory=list)
    checks: list[tuple[str, str]] = field(default_factory=list)
    indexes: list[tuple[str, str]] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    rls: list[str] = field(default_factory=list)
    orphans: list[tuple[str, str, str | None]] = field(default_factory=list)  # table, column, guessed parent
    migration_tool: str | None = None


TABLES_SQL = """
SELECT n.nspname, c.relname, c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY n.nspname, c.relname
"""
FUNCTIONS_SQL = """
SELECT n.nspname, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def read_catalogue(url: str, report: Report, timeout_ms: int = 5000) -> Catalogue | None:
    """The catalogue through a read-only session with a statement timeout; None when it cannot connect."""
    import sqlalchemy as sa

    from rehearsal_lib.probes.sql import read_only_engine

    cat = Catalogue()
    engine = read_only_engine(url, timeout_ms)  # the checks' own: READ ONLY sessions, statement timeout
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(TABLES_SQL)).all()[:MAX_TABLES * 4]
            names = []
            for schema, table, rls in rows:
                qualified = table if schema == "public" else f"{schema}.{table}"
                names.append((schema, table, qualified))
                if rls:
                    cat.rls.append(qualified)
            for schema, table, qualified in names:
                if table in ("alembic_version", "schema_migrations"):
                    cat.migration_tool = cat.migration_tool or table
                    continue
                if len(cat.tables) >= MAX_TABLES:
                    break
                ident = f'"{schema}"."{table}"'
                try:
                    cat.tables[qualified] = conn.execute(sa.text(f"SELECT count(*) FROM {ident}")).scalar() or 0
                except sa.exc.DBAPIError:
                    conn.rollback()
                    report.undecided.append(f"table {qualified}: could not count its rows (timeout or no grant)")
                    cat.tables[qualified] = -1
            insp = sa.inspect(conn)
            for schema, table, qualified in names:
                if qualified not in cat.tables:
                    continue
                sch = None if schema == "public" else schema
                pk = insp.get_pk_constraint(table, schema=sch).get("constrained_columns") or []
                if pk:
                    cat.primary_keys.append((qualified, pk))
                uniq = [list(u["column_names"]) for u in insp.get_unique_constraints(table, schema=sch)]
                for ix in insp.get_indexes(table, schema=sch):
                    cols = [c for c in ix["column_names"] if c]
                    if ix.get("unique") and len(cols) == len(ix["column_names"]) and cols not in uniq and cols != pk:
                        uniq.append(cols)
                cat.unique += [(qualified, cols) for cols in uniq]
                fks = insp.get_foreign_keys(table, schema=sch)
                fk_cols = {c for fk in fks for c in fk["constrained_columns"]}
                for fk in fks:
                    ref = fk["referred_table"] if fk.get("referred_schema") in (None, "public") \
                        else f"{fk['referred_schema']}.{fk['referred_table']}"
                    cat.foreign_keys.append((qualified, fk["constrained_columns"], ref))
                for ck in insp.get_check_constraints(table, schema=sch):
                    if ck.get("name"):
                        cat.checks.append((qualified, str(ck["name"])))
                for ix in insp.get_indexes(table, schema=sch):
                    if ix.get("name") and not ix.get("unique"):
                        cat.indexes.append((qualified, str(ix["name"])))
                for col in insp.get_columns(table, schema=sch):
                    if col["name"].endswith("_id") and col["name"] not in fk_cols and col["name"] not in pk:
                        cat.orphans.append((qualified, col["name"], guess_parent(col["name"][:-3], cat, names)))
            cat.functions = [name if schema == "public" else f"{schema}.{name}"
                             for schema, name in conn.execute(sa.text(FUNCTIONS_SQL)).all()]
    except sa.exc.SQLAlchemyError as exc:
        report.undecided.append(f"database: could not read the catalogue ({type(exc).__name__}: "
                                f"{str(getattr(exc, 'orig', exc)).splitlines()[0][:160]})")
        return None
    finally:
        engine.dispose()
    report.found.append(f"database: {len(cat.tables)} tables, {len(cat.primary_keys)} primary keys, "
                        f"{len(cat.unique)} unique, {len(cat.foreign_keys)} foreign keys, {len(cat.checks)} checks, "
                        f"{len(cat.indexes)} indexes, {len(cat.functions)} functions, {len(cat.rls)} with RLS")
    return cat


def guess_parent(stem: str, cat: Catalogue, names: list[tuple[str, str, str]]) -> str | None:
    """The table a `<stem>_id` column probably points at: `<stem>`, `<stem>s`, `<stem>es`, `app_<stem>`."""
    tables = {table: qualified for _, table, qualified in names}
    for candidate in (stem, f"{stem}s", f"{stem}es", f"{stem[:-1]}ies" if stem.endswith("y") else "",
                      f"app_{stem}", f"{stem}_table"):
        if candidate and candidate in tables:
            return tables[candidate]
    return None


# ------------------------------------------------------------------------------------------ the file


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, indent: int, text: str = "", comment: str = "") -> None:
        pad = "  " * indent
        if text and comment:
            self.lines.append(f"{pad}{text}  # {comment}")
        elif comment:
            self.lines.append(f"{pad}# {comment}")
        else:
            self.lines.append(f"{pad}{text}" if text else "")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def flow(d: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {q(v)}" for k, v in d.items() if not k.startswith(("#", "_"))) + "}"


def build(name: str, base_url: str, openapi: str | None, database_url_env: str | None, metrics: str | None,
          report: Report) -> str:
    """Inspect the target (GET only, read-only SQL) and return the params file's text."""
    client = ReadOnlyClient(base_url, report)
    try:
        doc, doc_where = load_openapi(client, openapi, report)
        ops = operations_of(doc) if doc else []
        principals = principals_from(doc, name, report) if doc else {}
        if doc:
            report.found.append(f"OpenAPI {doc_where}: {len(ops)} operations "
                                f"({sum(o.method == 'GET' for o in ops)} GET)")
        eps = probe_endpoints(client, ops, report)
        families = read_metrics(client, metrics or "/metrics", metrics is not None, report)
    finally:
        client.close()
    cat = None
    if database_url_env:
        url = os.environ.get(database_url_env)
        if url:
            cat = read_catalogue(url, report)
        else:
            report.undecided.append(f"${database_url_env} is not set: the database catalogue was not read")
    return render(name, base_url, doc_where if doc else None, ops, principals, eps, families, cat,
                  database_url_env, metrics or "/metrics", report)


def render(name: str, base_url: str, openapi: str | None, ops: list[Operation], principals: dict[str, dict[str, Any]],
           eps: dict[str, Any], families: list[tuple[str, str, float]], cat: Catalogue | None, db_env: str | None,
           metrics_path: str, report: Report) -> str:
    w = Writer()
    w(0, comment=f"params/{name}.yaml, written by `rehearse init` from what the service says about itself.")
    w(0, comment="Read every TODO: it marks what a person must decide. Reference: docs/params.md.")
    w(0, comment="Secrets are ${VAR} references only, read from the environment `rehearse` runs in.")
    w(0, f"name: {q(name)}")
    w(0, "environment:")
    w(1, "kind: staging", "TODO: development, staging or production (production refuses writes)")
    w(1, f"description: {q(f'{name}: generated by rehearse init')}")
    w(0, "target:")
    w(1, f"base_url: {q(base_url)}", "not a secret; a ${VAR} works too")
    if db_env:
        w(1, f"database_url: {q('${' + db_env + '}')}", "use a read-only role")
        report.variables[db_env] = "the database URL (read-only role)"
    if principals:
        w(1, "auth:")
        first = next(iter(principals))
        w(2, f"default: {first}", "what a request runs as when it names no principal (the fuzzing too)"
          if len(principals) > 1 else "")
        w(2, "principals:")
        for pname, p in principals.items():
            w(3, f"{pname}: {flow(p)}", p.get("#", f"from security scheme {p['_scheme']!r}"))
    w(0)
    w(0, "phases:")
    # --- preflight
    w(1, "preflight:")
    version = eps.get("version")
    if version:
        w(2, f"version: {{endpoint: {q(version[0])}, json_path: {q(version[1])}}}",
          f"it answered {version[2]!r}; add `expect:` with the version this release must run")
    else:
        w(2, "version_endpoint: null", "TODO: no version endpoint found; give one (phases.preflight.version) "
                                       "or a database_url, or the run cannot identify its target")
    health = eps.get("health")
    w(2, f"health_endpoint: {q(health or '/health')}", "" if health else "TODO: no health endpoint answered")
    w(2, f"ready_endpoint: {q(eps['ready']) if eps.get('ready') else 'null'}",
      "" if eps.get("ready") else "no readiness endpoint found")
    latency = [e for e in (health, eps.get("ready")) if e]
    if latency:
        w(2, f"latency: {{endpoints: {q(latency)}, samples: 10, p95_ms: 500, min_responses: 5}}",
          "TODO: the p95 your service promises")
    journey = journey_steps(ops, principals, eps)
    if journey:
        w(2, "journey:", "read-only: GET operations without parameters (or with example values)")
        for step in journey:
            w(3, f"- {flow(step)}", step.get("#", ""))
        skipped = [o.label for o in ops if o.method == "GET" and o.concrete_path() is None]
        if skipped:
            w(2, comment=f"not in the journey (a required parameter has no example): {', '.join(skipped[:8])}")
            report.undecided.append(f"GET operations left out of the journey (no example value for a required "
                                    f"parameter): {', '.join(skipped[:8])}")
        report.found.append(f"a read-only journey of {len(journey)} steps")
    # --- integrity
    if cat:
        render_integrity(w, cat, report)
    # --- security
    protected = protected_endpoints(ops, principals, report)
    w(1, "security:")
    w(2, "headers: {path: " + q(health or "/health") + "}", "the default security header rules")
    if protected:
        w(2, "protected_endpoints:", "operations the document says need credentials; each must refuse none and "
                                     "a wrong one")
        for pe in protected:
            w(3, f"- {flow(pe)}")
    if cat and cat.rls:
        w(2, f"rls_tables: {q(cat.rls)}")
    fuzz_ops = [o.label for o in ops if o.method == "GET" and not o.credential_params()
                and not (HEALTH_RE.search(o.path) or READY_RE.search(o.path))]
    if openapi and fuzz_ops:
        fuzz = {"openapi": openapi, "operations": fuzz_ops[:10], "max_examples": 10, "time_budget_s": 20,
                "max_response_ms": 2000}
        from rehearsal_lib import extras

        if extras.missing("fuzz"):  # a block validate would refuse: left for the person to switch on
            w(2, comment="TODO: schema-driven hostile inputs need Schemathesis: pip install 'rehearsal[fuzz]', "
                         "then uncomment")
            w(2, comment=f"fuzz: {flow(fuzz)}")
            report.undecided.append("Schemathesis is not installed (pip install 'rehearsal[fuzz]'): the fuzz block "
                                    "is commented out")
        else:
            w(2, f"fuzz: {flow(fuzz)}", "schema-driven hostile inputs, safe methods only")
            report.found.append(f"fuzzing of {len(fuzz_ops[:10])} GET operations (security.fuzz.*)")
    # --- observability
    if families:
        render_observability(w, families, metrics_path, eps, report)
    # --- load
    if journey:
        w(1, "load:", "a light read-only load on the journey's operations")
        w(2, "enabled: false", "TODO: the load phase is destructive by catalogue: set safety.allow_destructive: "
                               "true, then enabled: true")
        w(2, "stages:")
        w(3, "- name: light")
        w(4, "model: open")
        w(4, "rate: 5")
        w(4, "duration_s: 10")
        w(4, "scenarios:")
        for step in journey:
            sc = {"name": step["name"], "path": step["path"], "p95_ms": 500}
            if step.get("auth") is False:
                sc["auth"] = False
            if step.get("as"):
                sc["as"] = step["as"]
            w(5, f"- {flow(sc)}")
    # --- migrations
    if cat:
        render_migrations(w, cat, report)
    return w.text()


Principals = dict[str, dict[str, Any]]


def journey_steps(ops: list[Operation], principals: Principals, eps: dict[str, Any]) -> list[dict[str, Any]]:
    skip = {eps.get("health"), eps.get("ready"), (eps.get("version") or [None])[0]}
    steps: list[dict[str, Any]] = []
    names: set[str] = set()
    for o in ops:
        path = o.concrete_path() if o.method == "GET" else None
        if not path or o.path in skip or o.credential_params():
            continue
        step_name = slug(o.path)[:40] or "root"
        while step_name in names:
            step_name += "_"
        names.add(step_name)
        step: dict[str, Any] = {"name": step_name, "path": path, "expect_status": 200}
        if not o.security:
            step["auth"] = False
        else:
            who = scheme_principal(o, principals)
            if who:
                step["as"] = who
                step["#"] = f"needs {o.security[0]}: TODO 200 assumes {who} may read it"
        steps.append(step)
        if len(steps) >= MAX_JOURNEY:
            break
    return steps


def protected_endpoints(ops: list[Operation], principals: Principals, report: Report) -> list[dict[str, Any]]:
    out, names, left = [], set(), []
    for o in ops:
        if not o.security:
            continue
        path = o.concrete_path()
        if o.method != "GET" or not path:
            left.append(o.label)
            continue
        pe_name = slug(o.path)[:40] or "root"
        while pe_name in names:
            pe_name += "_"
        names.add(pe_name)
        pe: dict[str, Any] = {"name": pe_name, "path": path}
        who = scheme_principal(o, principals)
        if who:
            pe["as"] = who
        out.append(pe)
    keyed = [f"{o.label} ({', '.join(o.credential_params())})" for o in ops if o.credential_params()]
    if keyed:
        report.undecided.append(f"operations taking a credential as a plain parameter, not a security scheme: "
                                f"{'; '.join(keyed[:8])}: add an api_key principal and a protected endpoint "
                                "by hand if they need one")
    if out:
        report.found.append(f"{len(out)} protected GET endpoints (security.auth.<name>)")
    if left:
        report.undecided.append(f"protected operations not listed (writes, or a parameter without example): "
                                f"{', '.join(left[:8])}; add them with a harmless body if they must be checked")
    return out


def render_integrity(w: Writer, cat: Catalogue, report: Report) -> None:
    w(1, "integrity:")
    if cat.tables:
        w(2, "critical_tables:", "TODO: raise min_rows where a table must never be empty")
        for table, rows in cat.tables.items():
            w(3, f"- {{name: {q(table)}, min_rows: 0}}", f"{rows} rows now" if rows >= 0 else "rows not counted")
    if cat.indexes:
        w(2, "expected_indexes:")
        for table, index in cat.indexes:
            w(3, f"- {{name: {q(index)}, table: {q(table)}}}")
    checks = [(t, c, p) for t, c, p in cat.orphans if p is not None]
    if checks:
        w(2, "zero_row_checks:", "`*_id` columns without a foreign key: rows whose parent is missing")
        for table, col, parent_ in checks:
            parent = str(parent_)
            sql = (f"SELECT c.{col} FROM {table} c WHERE c.{col} IS NOT NULL AND NOT EXISTS "
                   f"(SELECT 1 FROM {parent} p WHERE p.id = c.{col})")
            title = f"every {table}.{col} has its row in {parent}"
            w(3, f"- {{name: {q(slug(f'{table}_{col}_orphans'))}, title: {q(title)}, sql: {q(sql)}}}",
              f"TODO: confirm {parent}.id is the parent of {table}.{col}")
    for table, col, guessed in cat.orphans:
        if not guessed:
            report.undecided.append(f"{table}.{col} has no foreign key and no table looks like its parent: "
                                    "no orphan check")
    if checks:
        report.found.append(f"{len(checks)} orphan checks on `*_id` columns without a foreign key")


def render_observability(w: Writer, families: list[tuple[str, str, float]], path: str, eps: dict[str, Any],
                         report: Report) -> None:
    own = [f for f in families if not f[0].startswith(SKIP_METRIC_PREFIXES) and not f[0].endswith("_created")] \
        or families
    w(1, "observability:")
    w(2, "metrics:")
    w(3, f"url: {q(path)}")
    w(3, "series:", "families the service exports now; TODO: add labels and bounds that matter")
    for fam, typ, _ in own[:MAX_SERIES]:
        kind = typ if typ in ("counter", "gauge", "histogram", "summary") else None
        w(4, "- " + flow({"name": fam, **({"type": kind} if kind else {})}))
    gauges = [f for f in own if f[1] == "gauge" and READY_GAUGE_RE.search(f[0])]
    if gauges and eps.get("ready"):
        w(2, f"readiness_gauge: {{endpoint: {q(eps['ready'])}, gauge: {q(gauges[0][0])}}}",
          "reads only: the gauge must agree with the readiness endpoint")
        report.found.append(f"readiness-like gauge {gauges[0][0]}")
    elif gauges:
        report.undecided.append(f"readiness-like gauge {gauges[0][0]} but no readiness endpoint to compare it with")


def render_migrations(w: Writer, cat: Catalogue, report: Report) -> None:
    w(1, "migrations:", "destructive by catalogue (apply, round trip): off until a person completes it")
    w(2, "enabled: false", "TODO: complete the driver below, then set enabled: true and safety.allow_destructive")
    if cat.migration_tool == "alembic_version":
        w(2, "driver: alembic")
        w(2, "alembic: {config: alembic.ini}", "TODO: the path of the service's alembic.ini (its script location)")
        w(2, "apply: false", "TODO: true with apply_database_url (a role that may migrate)")
        w(2, "roundtrip: false")
        report.found.append("migration tool: alembic (alembic_version table)")
    elif cat.migration_tool == "schema_migrations":
        w(2, "driver: sql_dir")
        w(2, "sql_dir: {directory: migrations}", "TODO: the folder of NNN_name.sql files")
        w(2, "apply: false")
        w(2, "roundtrip: false")
        report.found.append("migration tool: a schema_migrations table (sql_dir)")
    else:
        w(2, "driver: command")
        w(2, "command: {plan_command: \"true\"}", "TODO: no migration table found: the command printing pending "
                                                 "migrations")
        w(2, "apply: false")
        w(2, "roundtrip: false")
        report.undecided.append("no migration tool detected (no alembic_version or schema_migrations table)")
    w(2, "postconditions:", "the schema as it is now: what the release must keep")
    tables = [t for t in cat.tables]
    if tables:
        w(3, f"tables: {q(tables)}")
    for key, items in (("primary_keys", [{"table": t, "columns": c} for t, c in cat.primary_keys]),
                       ("unique", [{"table": t, "columns": c} for t, c in cat.unique]),
                       ("foreign_keys", [{"table": t, "columns": c, "references": r} for t, c, r in cat.foreign_keys]),
                       ("check_constraints", [{"table": t, "name": n} for t, n in cat.checks]),
                       ("indexes", [{"table": t, "name": n} for t, n in cat.indexes]),
                       ("rls", [{"table": t} for t in cat.rls])):
        if items:
            w(3, f"{key}:")
            for item in items:
                w(4, "- " + flow(item))
    if cat.functions:
        w(3, f"functions: {q(cat.functions)}")


def _require_reachable(base_url: str, report: Report, timeout_s: float = 10) -> None:
    """A target that does not answer at all describes nothing: say so (exit 2) instead of writing a file
    of guesses. Any HTTP answer (a 404 too) is an answer. One GET."""
    import httpx

    try:
        res = httpx.get(base_url, timeout=timeout_s, follow_redirects=False)
        report.requests.append((SAFE, base_url, res.status_code))
    except httpx.HTTPError as exc:
        raise InitError(f"--base-url {base_url}: no answer ({type(exc).__name__}: {exc}); is the service "
                        "running? Nothing was written") from None


def init(name: str, base_url: str, root: Path, openapi: str | None = None, database_url_env: str | None = None,
         metrics: str | None = None, force: bool = False) -> tuple[Path, Report]:
    """Write params/NAME.yaml under `root`; InitError (exit 2) when it exists and `force` is false."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name) or ".." in name or len(name) > 64:
        raise InitError(f"environment name {name!r}: letters, digits, '.', '_', '-' (at most 64)")
    if not base_url.startswith(("http://", "https://")):
        raise InitError(f"--base-url {base_url}: an http(s) URL")
    path = root / "params" / f"{name}.yaml"
    if path.exists() and not force:
        raise InitError(f"{path} exists; rehearse init does not overwrite it without --force")
    report = Report()
    _require_reachable(base_url, report)
    text = build(name, base_url, openapi, database_url_env, metrics, report)
    yaml.safe_load(text)  # our own output must be YAML
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path, report


def cmd_init(args: Any) -> int:
    """The `rehearse init` command: write the file, print what was found and what is left to decide."""
    from rehearsal_lib.config import project_root

    try:
        path, report = init(args.name, args.base_url, project_root(), args.openapi, args.database_url_env,
                            args.metrics, args.force)
    except InitError as exc:
        print(f"rehearse: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print("found:")
    for line in report.found:
        print(f"  - {line}")
    if report.undecided:
        print("could not decide (see the TODO comments in the file):")
        for line in report.undecided:
            print(f"  - {line}")
    if report.variables:
        print("set these variables before `rehearse run`:")
        for var, what in report.variables.items():
            print(f"  {var}: {what}")
    print(f"sent {len(report.requests)} requests, all GET; wrote nothing to the target")
    print(f"next: rehearse validate {args.name} && rehearse run {args.name}")
    return 0
