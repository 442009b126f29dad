"""govshare: query government base data under field-level access control.

Every query runs as a real-name user for a declared purpose and sees exactly the fields and
rows that user's department was granted (masked where the grant says so); every decision is
on a tamper-evident audit trail. Results are Apache Arrow data.

>>> import govshare
>>> with govshare.connect(demo_store, user="analyst", purpose="STATS") as s:
...     t = s.sql("SELECT sex_code, count(*) AS n FROM person GROUP BY sex_code").to_arrow()
>>> t.column_names
['sex_code', 'n']
>>> sum(t["n"].to_pylist())
200

A field outside the grant is refused with a message that says how to obtain it:

>>> with govshare.connect(demo_store, user="analyst", purpose="STATS") as s:
...     s.sql("SELECT name FROM person")
Traceback (most recent call last):
  ...
govshare.AccessDenied: access denied: field person.name (姓名) is not granted to department 'STAT' for purpose 'STATS'; it is a conditional item: apply to the providing department, whose approver decides ...
"""

from __future__ import annotations

import datetime as _dt
import json as _json
import os as _os
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as _pa

from govshare import _internal
from govshare.exceptions import (
    AccessDenied,
    GovshareError,
    IntegrityError,
    InternalError,
    InvalidInput,
    LimitExceeded,
    Locked,
    NotFound,
    QueryFailed,
    Rejected,
    StorageError,
)

__version__: str = _internal.__version__

__all__ = [
    "AccessDenied",
    "Engine",
    "GovshareError",
    "IntegrityError",
    "InternalError",
    "InvalidInput",
    "LimitExceeded",
    "Locked",
    "NotFound",
    "QueryFailed",
    "Rejected",
    "StorageError",
    "Result",
    "Session",
    "connect",
    "grant_request",
    "init_store",
    "write_synthetic",
]

_Path = str | _os.PathLike[str]


def _str(value: object, name: str) -> str:
    """Refuse a non-string argument with the built-in TypeError, before it reaches the engine."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return value


def init_store(
    path: _Path,
    *,
    admin: str,
    admin_name: str,
    region: str,
    department: str = "PLAT",
    department_name: str = "数据共享平台",
) -> None:
    """Create a store at ``path`` with its first platform administrator ``admin`` (like
    ``initdb``'s superuser); every later act is done by a user that administrator, or another,
    adds. On a store already there this succeeds only for one of its platform administrators.
    """
    founder = {
        "user": _str(admin, "admin"),
        "name": _str(admin_name, "admin_name"),
        "department": _str(department, "department"),
        "department_name": _str(department_name, "department_name"),
        "region": _str(region, "region"),
    }
    _internal.init_store(_os.fspath(path), _json.dumps(founder))


def write_synthetic(
    directory: _Path, persons: int = 1000, entities: int = 100, seed: int = 1
) -> tuple[str, str]:
    """Write synthetic ``person.csv`` and ``legal_entity.csv`` (valid IDs, real region codes).

    Deterministic for a seed; returns the two paths, ready for :meth:`Engine.load`.
    """
    p, e = _internal.write_synthetic(_os.fspath(directory), persons, entities, seed)
    return str(p), str(e)


def grant_request(
    consumer_dept: str,
    dataset: str,
    fields: dict[str, str | None] | Sequence[str],
    purpose_code: str,
    purpose_text: str,
    *,
    regions: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
    users: Sequence[str] = (),
    days: int = 365,
) -> dict[str, Any]:
    """Build a grant request for :meth:`Engine.request_grant` / :meth:`Engine.approve`.

    ``fields`` lists field names in clear, or maps each name to a mask (``"name"``,
    ``"citizen_id"``, ``"phone"``, ``"address"``, ``"date_to_year"``, ``"nullify"``,
    ``"pseudonym"``) or ``None`` for clear. ``regions`` / ``subjects`` narrow the rows.

    >>> r = grant_request("STAT", "person", {"sex_code": None, "name": "name"}, "P1", "demo")
    >>> r["fields"]
    [{'field': 'sex_code', 'treatment': 'clear'}, {'field': 'name', 'treatment': {'masked': 'name'}}]
    """
    if isinstance(fields, dict):
        items = list(fields.items())
    else:
        items = [(f, None) for f in fields]
    now = _dt.datetime.now(_dt.timezone.utc)
    return {
        "consumer_dept": consumer_dept,
        "users": list(users),
        "dataset": dataset,
        "fields": [
            {"field": f, "treatment": "clear" if m is None else {"masked": m}} for f, m in items
        ],
        "purpose_code": purpose_code,
        "purpose_text": purpose_text,
        "scope": {
            "regions": None if regions is None else list(regions),
            "subjects": None if subjects is None else list(subjects),
        },
        "modes": ["query"],
        "valid_from": (now - _dt.timedelta(minutes=5)).isoformat(),
        "valid_until": (now + _dt.timedelta(days=days)).isoformat(),
    }


class Result:
    """The result of one query, read once.

    Convert with :meth:`to_arrow`, :meth:`to_pandas` or :meth:`to_polars`, iterate over
    ``pyarrow.RecordBatch`` objects, or hand it to any Arrow consumer through the PyCapsule
    stream protocol (``pyarrow.table(result)``, ``polars.from_arrow``, ``duckdb``), which reads
    it without copies and without the GIL. The query's completion is recorded when it has been
    read to the end, closed, or garbage-collected.
    """

    def __init__(self, raw: _internal.RawStream) -> None:
        self._raw = raw

    def __repr__(self) -> str:
        """What the result holds, without reading it (reading consumes it).

        >>> with connect(demo_store, user="analyst", purpose="STATS") as s:
        ...     s.sql("SELECT sex_code, count(*) AS n FROM person GROUP BY sex_code")
        <govshare.Result sex_code: string, n: int64 (unread; .to_arrow(), .to_pandas(), iterate)>
        """
        cols = ", ".join(f"{f.name}: {f.type}" for f in self.schema)
        return f"<govshare.Result {cols} (unread; .to_arrow(), .to_pandas(), iterate)>"

    @property
    def schema(self) -> _pa.Schema:
        """The result's Arrow schema."""
        return _pa.schema(self._raw)

    def __iter__(self) -> Iterator[_pa.RecordBatch]:
        """Batches as they arrive; the GIL is released while the engine works and Ctrl-C
        cancels the query (``KeyboardInterrupt``)."""
        while (batch := self._raw.next_batch()) is not None:
            yield _pa.record_batch(batch)

    def to_arrow(self) -> _pa.Table:
        """All rows as a ``pyarrow.Table`` (interruptible with Ctrl-C)."""
        schema = self.schema
        return _pa.Table.from_batches(list(self), schema=schema)

    def to_pandas(self) -> Any:
        """All rows as a ``pandas.DataFrame`` (needs pandas)."""
        return self.to_arrow().to_pandas()

    def to_polars(self) -> Any:
        """All rows as a ``polars.DataFrame`` (needs polars)."""
        import polars as pl

        return pl.from_arrow(self.to_arrow())

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        """The Arrow PyCapsule stream protocol: hands the remaining batches over, once."""
        return self._raw.__arrow_c_stream__(requested_schema)

    def __arrow_c_schema__(self) -> object:
        """The Arrow PyCapsule schema protocol."""
        return self._raw.__arrow_c_schema__()

    def close(self) -> None:
        """Stop reading; a running query is cancelled and recorded as abandoned."""
        self._raw.close()

    def __enter__(self) -> Result:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Session:
    """A real-name user acting for a declared purpose.

    Every query re-checks the policy: a grant revoked or a user suspended while the session is
    open takes effect at the next query. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, raw: _internal.RawSession) -> None:
        self._raw = raw
        # Kept for repr, which must work on a closed session too.
        self._who = (raw.user, raw.purpose)

    def __repr__(self) -> str:
        """Who acts, for what, and whether the session is still open.

        >>> s = connect(demo_store, user="analyst", purpose="STATS")
        >>> s
        <govshare.Session user='analyst' purpose='STATS' open>
        >>> s.close(); s
        <govshare.Session user='analyst' purpose='STATS' closed>
        """
        state = "closed" if self.closed else "open"
        user, purpose = self._who
        return f"<govshare.Session user={user!r} purpose={purpose!r} {state}>"

    @property
    def user(self) -> str:
        """The real-name user id."""
        return self._raw.user

    @property
    def purpose(self) -> str:
        """The declared purpose code."""
        return self._raw.purpose

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._raw.closed

    def sql(self, query: str, params: Any = None) -> Result:
        """Run one SQL query (read-only) under the session's grants.

        Access is decided, and the query recorded on the audit trail, before this returns.

        >>> with connect(demo_store, user="analyst", purpose="STATS") as s:
        ...     s.sql("SELECT count(*) AS n FROM person").to_arrow()["n"][0].as_py()
        200

        ``params`` binds the query's ``$1``, ``$2``, ... placeholders: a list of values (one
        execution), or anything ``pyarrow.table`` accepts with one column per placeholder and
        one row per execution (the results of all rows together). Values are bound into the
        planned query, never pasted into its text; the audit trail keeps the SQL and the
        values' digests, not the values.

        >>> with connect(demo_store, user="analyst", purpose="STATS") as s:
        ...     s.sql("SELECT count(*) AS n FROM person WHERE sex_code = $1", params=["1"]).to_arrow()["n"][0].as_py() > 0
        True
        """
        query = _str(query, "query")
        if params is None:
            return Result(self._raw.sql(query))
        if isinstance(params, (list, tuple)):
            table = _pa.table({f"${i + 1}": _pa.array([v]) for i, v in enumerate(params)})
        elif isinstance(params, _pa.Table):
            table = params
        else:
            table = _pa.table(params)
        sink = _pa.BufferOutputStream()
        with _pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Result(self._raw.sql_params(query, sink.getvalue().to_pybytes()))

    def changes(self, dataset: str) -> tuple[_pa.Table, int]:
        """The changes of ``dataset`` for this session's push subscription since its last
        acknowledgement: a table with ``_op`` (``insert``, ``update``, ``delete``) and the
        granted fields, masked as granted, and the token to pass to :meth:`ack` once they are
        applied. Until then the same changes are delivered again."""
        _from, to, raw = self._raw.changes(_str(dataset, "dataset"))
        return Result(raw).to_arrow(), to

    def ack(self, dataset: str, token: int) -> None:
        """Acknowledge the changes up to ``token`` (from :meth:`changes`): recorded, then the
        subscription moves on."""
        if not isinstance(token, int):
            raise TypeError("token must be int")
        self._raw.ack(_str(dataset, "dataset"), token)

    def aggregate(self, query: str) -> Result:
        """Run an aggregate query under an aggregate-only grant: only aggregates of one dataset;
        groups with fewer subjects than the grant's minimum are left out; the key field may not
        be used; each query counts against the grant's daily budget."""
        return Result(self._raw.aggregate(_str(query, "query")))

    def lookup(self, dataset: str, keys: Sequence[str]) -> Result:
        """The subjects of ``dataset`` with these keys, as this session may see them: every
        granted field, masked as granted; a key not found or out of scope is simply absent.
        Through the key index (no scan); decided and recorded like a query. The key field must
        be granted in clear."""
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            raise TypeError("keys must be a sequence of str")
        return Result(self._raw.lookup(_str(dataset, "dataset"), list(keys)))

    def verify(self, dataset: str, claims: Any) -> _pa.Table:
        """Verify claims (核验) under a verify grant: ``claims`` is anything ``pyarrow.table``
        accepts (a table, a record batch, a dict of columns) with the dataset's key column first,
        then one column per claimed field. The answer has one row per claim: per field
        ``True`` (match), ``False`` (no match) or null (not claimed) — never a value; a
        ``found`` column first only when the grant may disclose absence. Charged to the grant's
        quotas (over a limit: :class:`LimitExceeded`) and recorded before it is answered."""
        table = claims if isinstance(claims, _pa.Table) else _pa.table(claims)
        sink = _pa.BufferOutputStream()
        with _pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        raw = self._raw.verify(_str(dataset, "dataset"), sink.getvalue().to_pybytes())
        return Result(raw).to_arrow()

    def export(self, dataset: str, path: _Path, format: str = "parquet") -> dict[str, Any]:
        """Export the granted fields and rows of ``dataset`` (masked as granted) into the directory
        ``path`` under an export grant: ``format`` is ``"parquet"``, ``"csv"``, ``"csv-gbk"`` or
        ``"arrow"``. Returns the manifest (dataset, version, grant, rows, each file's blake3),
        which is also written beside the file and digested on the audit trail. Refused with
        :class:`LimitExceeded` beyond the grant's rows per export or exports per day."""
        return _json.loads(self._raw.export(_str(dataset, "dataset"), _str(format, "format"), _os.fspath(path)))

    def catalog(self) -> list[dict[str, Any]]:
        """The datasets and fields this session may see now (masked fields with their masked
        type).

        >>> with connect(demo_store, user="analyst", purpose="STATS") as s:
        ...     [f["name"] for f in s.catalog()[0]["fields"]]
        ['sex_code', 'hukou_region_code']
        """
        return _json.loads(self._raw.catalog_json())

    def cancel(self) -> None:
        """Stop this session's running queries, from any thread; each raises
        ``KeyboardInterrupt`` where it is consumed and is recorded as cancelled. Later queries run
        normally."""
        self._raw.cancel()

    def close(self) -> None:
        """End the session (recorded on the audit trail). Closing twice is harmless."""
        self._raw.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Engine:
    """An open store: sessions, administration, and the audit trail. Thread-safe.

    Administrative calls and reads take ``by``, the acting real-name user, which is recorded;
    who may do what follows the platform's roles and separation of duties (platform admins
    manage departments, users and grants on request; the providing department's approver
    decides conditional requests, never for their own department; operators load; auditors
    read the trail).
    """

    def __init__(self, path: _Path) -> None:
        self._path = _os.fspath(path)
        self._raw = _internal.RawEngine(self._path)

    def __repr__(self) -> str:
        """The store this engine has open.

        >>> Engine(demo_store)  # doctest: +ELLIPSIS
        <govshare.Engine store='...'>
        """
        return f"<govshare.Engine store={self._path!r}>"

    def session(
        self, user: str, purpose: str, *, system: str | None = None, auth: str = "password"
    ) -> Session:
        """Open a session; fails at once with :class:`AccessDenied` when nothing would be
        allowed (unknown or suspended user or host system, no valid grant for the purpose).

        ``system`` names the registered host system the session runs through; ``auth`` says
        how the host authenticated the user: ``"password"``, ``"certificate"`` or
        ``"second_factor"`` — sensitive items (grade L4) in clear need ``"second_factor"``.
        """
        login = {
            "user": _str(user, "user"),
            "purpose": _str(purpose, "purpose"),
            "system": None if system is None else _str(system, "system"),
            "auth": _str(auth, "auth"),
        }
        return Session(self._raw.session_as(_json.dumps(login)))

    def add_system(self, system_id: str, name: str, department: str, *, by: str) -> None:
        """Register (or change) a host system that links govshare, run by ``department``."""
        s = {"id": system_id, "name": name, "department": department, "status": "active"}
        self._raw.upsert_system(_str(by, "by"), _json.dumps(s))

    def set_system_active(self, system_id: str, active: bool, *, by: str) -> None:
        """Suspend (``active=False``) or reactivate a host system: its sessions are refused
        from their next query on."""
        self._raw.set_system_active(_str(by, "by"), _str(system_id, "system_id"), bool(active))

    def add_department(self, code: str, name: str, region: str, *, by: str) -> None:
        """Add (or replace) a department with its region of jurisdiction (GB/T 2260 code)."""
        d = {"code": code, "name": name, "region": region, "status": "active"}
        self._raw.upsert_department(_str(by, "by"), _json.dumps(d))

    def set_department_active(self, code: str, active: bool, *, by: str) -> None:
        """Suspend (``active=False``) or reactivate a department."""
        self._raw.set_department_active(_str(by, "by"), _str(code, "code"), bool(active))

    def add_user(
        self, user_id: str, name: str, department: str, roles: Sequence[str], *, by: str
    ) -> None:
        """Add (or replace) a real-name user. Roles: ``consumer``, ``provider_approver``,
        ``platform_admin``, ``auditor``, ``coordinator``, ``operator``."""
        if isinstance(roles, str):
            raise TypeError("roles must be a sequence of role names, not a str")
        u = {
            "id": user_id,
            "name": name,
            "department": department,
            "roles": list(roles),
            "status": "active",
        }
        self._raw.upsert_user(_str(by, "by"), _json.dumps(u))

    def set_user_active(self, user_id: str, active: bool, *, by: str) -> None:
        """Suspend (``active=False``) or reactivate a user."""
        self._raw.set_user_active(_str(by, "by"), _str(user_id, "user_id"), bool(active))

    def request_grant(self, request: dict[str, Any], *, by: str) -> int:
        """Grant on request (unconditional fields, by a platform admin); returns the grant id.
        Build ``request`` with :func:`grant_request`."""
        return self._raw.request_grant(_str(by, "by"), _json.dumps(request))

    def approve(self, request: dict[str, Any], *, by: str) -> int:
        """Approve a request as the providing department's approver; returns the new grant id."""
        grant = self._raw.decide_request(_str(by, "by"), _json.dumps(request), True, "")
        assert grant is not None  # an approval always creates a grant
        return grant

    def reject(self, request: dict[str, Any], *, by: str, reason: str) -> None:
        """Reject a request, with the reason on record."""
        self._raw.decide_request(_str(by, "by"), _json.dumps(request), False, _str(reason, "reason"))

    def revoke(self, grant_id: int, *, by: str, reason: str) -> None:
        """Revoke a grant; sessions relying on it are refused from their next query on."""
        self._raw.revoke_grant(_str(by, "by"), grant_id, _str(reason, "reason"))

    def policy(self, *, by: str) -> dict[str, Any]:
        """Departments, users, grants and approvals as ``by`` may see them, as a dict
        (recorded)."""
        return _json.loads(self._raw.policy_json(_str(by, "by")))

    def load(
        self,
        dataset: str,
        path: _Path,
        *,
        by: str,
        incremental: bool = False,
        strict: bool = False,
        handover: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Load a CSV or Parquet file into ``dataset`` and return the load summary (version,
        live rows, handover record with counts, rejects file)."""
        h = None if handover is None else _json.dumps(handover)
        summary = self._raw.load(
            _str(by, "by"),
            _str(dataset, "dataset"),
            _os.fspath(path),
            bool(incremental),
            bool(strict),
            h,
        )
        return _json.loads(summary)

    def release_open_data(
        self,
        dataset: str,
        fields: list[str],
        out: _Path,
        *,
        by: str,
        k: int = 10,
        max_suppression: float = 0.01,
    ) -> dict[str, Any]:
        """Publish a k-anonymous open-data extract of ``dataset`` into directory ``out`` as
        ``by``, the provider-approver of the department providing every item: only open items,
        the conditionally open ones generalised until every released group holds ``k`` rows
        (at most ``max_suppression`` of the rows left out). Returns the release manifest
        (version, generalisation, k reached, suppressed rows, loss, the file's blake3); its
        digest is on the audit trail."""
        spec = _json.dumps(
            {
                "dataset": _str(dataset, "dataset"),
                "fields": [_str(f, "fields") for f in fields],
                "k": int(k),
                "max_suppression": float(max_suppression),
            }
        )
        return _json.loads(self._raw.release_open_data(_str(by, "by"), spec, _os.fspath(out)))

    def verify_audit(
        self, checkpoint: dict[str, Any] | None = None, *, by: str
    ) -> dict[str, Any]:
        """Walk the audit trail's hash chain as auditor ``by`` (against a kept checkpoint,
        when given).

        Returns ``{"verdict": "intact", "records": n, "head": {...}}``; a broken chain raises
        :class:`IntegrityError` naming the first bad record.
        """
        cp = None if checkpoint is None else _json.dumps(checkpoint)
        verdict = _json.loads(self._raw.audit_verify(_str(by, "by"), cp))
        if verdict["verdict"] != "intact":
            raise IntegrityError(
                f"audit trail broken at record {verdict['seq']} "
                f"({verdict['segment']}, line {verdict['line']}): {verdict['problem']}"
            )
        return verdict

    def checkpoint(self, *, by: str) -> dict[str, Any]:
        """The chain head ``{"seq", "hash"}`` for an external party to keep, taken by auditor
        ``by``."""
        return _json.loads(self._raw.audit_checkpoint(_str(by, "by")))

    def who_accessed(self, key: str, *, by: str) -> list[dict[str, Any]]:
        """Every recorded query (and administrative lookup) that read this citizen ID or USCC:
        user, department, purpose, time, dataset version and SQL. Asked by auditor ``by``;
        their own acts are left to another auditor."""
        return _json.loads(self._raw.who_accessed(_str(by, "by"), _str(key, "key")))

    def audit_sql(self, user: str, query: str) -> Result:
        """Query the audit trail (table ``audit_log``) as ``user``: auditors see every record,
        anyone else only their department's."""
        return Result(self._raw.audit_sql(_str(user, "user"), _str(query, "query")))

    def act(self, act: dict[str, Any], *, by: str) -> dict[str, Any]:
        """Do one workflow act as ``by``: ``{"act": "apply", ...}`` (apply, complete, return,
        resubmit, withdraw, dispute, hand_back, decide, escalate, file_objection,
        request_extension, sign_off_extension, confirm, correct, make_agreement,
        renew_agreement, revoke_agreement, close_reclassification, resolve_conflict,
        add_calendar_years). Returns what it produced, e.g. the application as it stands.
        The policy decides; a refusal raises :class:`AccessDenied` and is recorded."""
        if not isinstance(act, dict):
            raise TypeError("act must be a dict")
        return _json.loads(self._raw.act(_str(by, "by"), _json.dumps(act, default=str)))

    def apply(
        self,
        request: dict[str, Any],
        *,
        legal_basis: str,
        by: str,
    ) -> dict[str, Any]:
        """File an application (see :func:`grant_request` for ``request``): unconditional
        items are granted at once, conditional ones go to the completeness check, not-shared
        ones to the coordinator. Returns the application as it stands."""
        return self.act({"act": "apply", "request": request, "legal_basis": legal_basis}, by=by)

    def service_catalog(self, *, by: str) -> list[dict[str, Any]]:
        """The datasets and items ``by`` may apply for: share types, sources, versions, last
        update, deadlines, and what ``by``'s department holds now."""
        return _json.loads(self._raw.service_catalog(_str(by, "by")))

    def conflicts(self, *, by: str, dataset: str | None = None) -> list[dict[str, Any]]:
        """Conflicts between sources (one source per field) with their resolutions, as ``by``
        (the authoritative source's approver, a coordinator or an auditor) may see them."""
        return _json.loads(self._raw.conflicts(_str(by, "by"), dataset))

    def report_sql(self, query: str, *, by: str) -> Result:
        """Query the report tables (usage, applications, objections, agreements,
        late_providers, denials, volumes) as coordinator or auditor ``by``."""
        return Result(self._raw.report_sql(_str(by, "by"), _str(query, "query")))

    def report_html(self, *, by: str) -> str:
        """The report page (every table, with charts) for coordinator or auditor ``by``."""
        return self._raw.report_html(_str(by, "by"))


def connect(
    path: _Path,
    *,
    user: str,
    purpose: str,
    system: str | None = None,
    auth: str = "password",
) -> Session:
    """Open the store at ``path`` and a session for ``user`` acting for ``purpose`` (see
    :meth:`Engine.session` for ``system`` and ``auth``).

    >>> with connect(demo_store, user="analyst", purpose="STATS") as s:
    ...     s.user, s.purpose
    ('analyst', 'STATS')
    """
    return Engine(path).session(user, purpose, system=system, auth=auth)
