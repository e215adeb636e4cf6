"""Backing up a live PostgreSQL database with ``pg_dump -Fc``; restoring with ``pg_restore``.

``source`` (of :meth:`PostgresBackupStrategy.stage`) and ``destination`` (of
:meth:`PostgresBackupStrategy.finish_restore`) are libpq connection strings in either
form, ``postgresql://user:pw@host:port/db?sslmode=...`` or ``host=... dbname=...``, or a
bare database name, which then takes its host, port and user from the usual ``PG*``
environment variables, as ``psql`` would.

Credentials come from the connection string's password or from a passfile
(``passfile=``, or libpq's own ``PGPASSFILE``/``~/.pgpass``). The password is taken
out of the connection string and handed to the tools as ``PGPASSWORD`` in their
environment, never in their argument list (which every local user can read in
``/proc``), and every message the tools print is scrubbed of it before it becomes a
:class:`~sergas_guard.errors.BackupError`. The tools run with ``--no-password``: a
missing password is an error, never a prompt that hangs a backup.

Staging writes one file, ``dump.pgdump``: ``pg_dump --format=custom --compress=0``.
``pg_dump`` reads the whole database in one repeatable-read snapshot, so the dump is
the database as of one moment while writers keep writing. It is left uncompressed on
purpose: the repository compresses chunks with zstd and deduplicates them across
backups, which a gzip-compressed dump would defeat. The dump's table of contents is
read back (``pg_restore --list``) before the stage counts as done.

Restoring goes into the database named by ``destination``. A missing one is created
(from the server's default template, by ``CREATE DATABASE`` over the maintenance
database, ``postgres`` unless told otherwise); an existing one is used when empty (no
tables, views, sequences, functions, types or schemas of its own) and refused with
BackupError when it holds anything: a restore never merges into or overwrites a
database. ``pg_restore`` then runs with ``--no-owner`` (objects belong to the restoring
user, who may not be the original owner), ``--exit-on-error`` and
``--single-transaction``, so a failed restore leaves the database empty (and, if the
restore created it, still there).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode

from sergas_guard.errors import BackupError, ConfigurationError, IntegrityError
from sergas_guard.secrets import credentials_problem, scrub, url_secrets, userinfo

__all__ = ["PostgresBackupStrategy"]

DUMP_NAME = "dump.pgdump"
_URL_SCHEMES = ("postgresql://", "postgres://")
# How much of a failing tool's stderr an error message carries (its last lines matter).
_STDERR_TAIL = 2000

# Creates the database only when it is missing; psql quotes :'x' as a literal, :"x" as
# an identifier, so no name can inject SQL.
_CREATE_IF_MISSING = """\
SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname') AS missing \\gset
\\if :missing
CREATE DATABASE :"dbname";
\\endif
"""
# What a database holds beyond what CREATE DATABASE gives it.
_USER_OBJECTS = """\
WITH own AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema')
    AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'
)
SELECT (SELECT count(*) FROM pg_class WHERE relnamespace IN (SELECT oid FROM own))
     + (SELECT count(*) FROM pg_proc WHERE pronamespace IN (SELECT oid FROM own))
     + (SELECT count(*) FROM pg_type WHERE typnamespace IN (SELECT oid FROM own))
     + (SELECT count(*) FROM own WHERE nspname <> 'public')
"""


class PostgresBackupStrategy:
    """``pg_dump -Fc`` backups of a live PostgreSQL database (see the module docstring).

    ``pg_dump``, ``pg_restore`` and ``psql`` are paths or names looked up on ``PATH``,
    then in ``/usr/lib/postgresql/<newest>/bin``; ``psql`` defaults to the one beside
    ``pg_restore``. ``passfile`` is a libpq password file (mode 0600 or stricter) used
    when a connection string carries no password. ``maintenance_database`` is the
    database a restore connects to in order to create a missing destination database.
    Raises ConfigurationError naming the field when ``compress`` is not a bool, a tool
    is not found or not executable, the passfile is missing or readable by others, or
    ``maintenance_database`` is empty.
    """

    kind = "postgres"
    restores_in_place = False

    def __init__(
        self,
        compress: bool = True,
        *,
        pg_dump: str | Path = "pg_dump",
        pg_restore: str | Path = "pg_restore",
        psql: str | Path | None = None,
        passfile: str | Path | None = None,
        maintenance_database: str = "postgres",
    ) -> None:
        if not isinstance(compress, bool):
            raise ConfigurationError("compress must be True or False", field="compress")
        self.compress = compress
        self.pg_dump = _find_tool(pg_dump, field="pg_dump")
        self.pg_restore = _find_tool(pg_restore, field="pg_restore")
        if psql is None:
            beside = self.pg_restore.with_name("psql")
            psql = beside if os.access(beside, os.X_OK) else "psql"
        self.psql = _find_tool(psql, field="psql")
        self.passfile = None if passfile is None else _check_passfile(passfile)
        if not isinstance(maintenance_database, str) or not maintenance_database:
            raise ConfigurationError(
                "maintenance_database must be a database name", field="maintenance_database"
            )
        self.maintenance_database = maintenance_database

    def __repr__(self) -> str:
        return (
            f"PostgresBackupStrategy(compress={self.compress}, pg_dump={str(self.pg_dump)!r}, "
            f"pg_restore={str(self.pg_restore)!r}, psql={str(self.psql)!r}, "
            f"passfile={None if self.passfile is None else str(self.passfile)!r}, "
            f"maintenance_database={self.maintenance_database!r})"
        )

    def exclude(self, relative_path: str) -> bool:
        """Nothing is excluded: the staged tree is the one dump file."""
        return False

    async def stage(self, source: str, staging: Path) -> Path:
        """Dump the database ``source`` names into ``staging/dump.pgdump``; returns ``staging``.

        Raises BackupError (its message scrubbed of the password) when ``source`` is not
        a usable connection string or ``pg_dump`` fails, IntegrityError when the dump's
        table of contents cannot be read back.
        """
        target = _Conninfo.parse(source, what="source")
        dump = staging / DUMP_NAME
        argv = [
            str(self.pg_dump),
            "--format=custom",
            "--compress=0",
            "--no-password",
            f"--file={dump}",
            f"--dbname={target.conninfo}",
        ]
        await self._run(argv, target, what=f"pg_dump of {target.shown}")
        try:
            await self._run([str(self.pg_restore), "--list", str(dump)], target, what="")
        except BackupError as exc:
            raise IntegrityError(f"the dump of {target.shown} cannot be read back: {exc}") from exc
        return staging

    async def finish_restore(self, restored: Path, destination: str) -> None:
        """Restore the dump in ``restored`` into the database ``destination`` names.

        ``restored`` is the restored tree (a directory holding one ``*.pgdump``) or that
        file. Creates the database when missing. Raises BackupError (scrubbed) when the
        tree holds no single dump, ``destination`` names no database or one that is
        not empty, or ``psql``/``pg_restore`` fail.
        """
        dump = _restored_dump(restored)
        target = _Conninfo.parse(destination, what="destination")
        if not target.dbname:
            raise BackupError(f"the restore destination {target.shown} names no database")
        maintenance = target.with_dbname(self.maintenance_database)
        await self._run(
            [
                str(self.psql),
                "--no-psqlrc",
                "--quiet",
                "--no-password",
                "--set=ON_ERROR_STOP=1",
                f"--set=dbname={target.dbname}",
                f"--dbname={maintenance.conninfo}",
            ],
            target,
            what=f"creating database {target.dbname!r}",
            stdin=_CREATE_IF_MISSING,
        )
        count = await self._run(
            [
                str(self.psql),
                "--no-psqlrc",
                "--no-align",
                "--tuples-only",
                "--no-password",
                "--set=ON_ERROR_STOP=1",
                f"--dbname={target.conninfo}",
            ],
            target,
            what=f"inspecting database {target.dbname!r}",
            stdin=_USER_OBJECTS,
        )
        if not count.strip().isdigit():
            raise BackupError(f"cannot tell whether database {target.dbname!r} is empty")
        if int(count) > 0:
            raise BackupError(
                f"the restore destination database {target.dbname!r} is not empty; "
                "restore into a new or empty database (its contents were left untouched)"
            )
        await self._run(
            [
                str(self.pg_restore),
                "--no-owner",
                "--exit-on-error",
                "--single-transaction",
                "--no-password",
                f"--dbname={target.conninfo}",
                str(dump),
            ],
            target,
            what=f"pg_restore into database {target.dbname!r} (left empty)",
        )

    def _environment(self, target: _Conninfo) -> dict[str, str]:
        env = dict(os.environ)
        if self.passfile is not None:
            env["PGPASSFILE"] = str(self.passfile)
            # An inherited PGPASSWORD would win over the passfile the caller chose.
            env.pop("PGPASSWORD", None)
        if target.password is not None:
            env["PGPASSWORD"] = target.password
        return env

    async def _run(
        self, argv: list[str], target: _Conninfo, *, what: str, stdin: str | None = None
    ) -> str:
        """Run a tool; its stdout, or BackupError with its scrubbed stderr."""
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environment(target),
            )
        except OSError as exc:
            raise BackupError(f"cannot run {Path(argv[0]).name}: {exc.strerror}") from exc
        try:
            out, err = await process.communicate(None if stdin is None else stdin.encode())
        except BaseException:
            # Cancelled (or interrupted): the tool must not outlive the backup.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
            raise
        if process.returncode != 0:
            detail = err.decode(errors="replace").strip()[-_STDERR_TAIL:]
            message = f"{what or Path(argv[0]).name} failed (exit {process.returncode}): {detail}"
            raise BackupError(scrub(message, *target.secrets))
        return out.decode(errors="replace")


@dataclass(frozen=True)
class _Conninfo:
    """A connection string split into what goes in argv and the password that must not.

    ``url`` holds a URL's parts (scheme, user, hosts, query pairs), else ``pairs`` holds
    libpq keyword/value pairs; neither ever holds the password.
    """

    url: tuple[str, str, str] | None  # scheme://, "user@" (encoded) or "", hosts
    pairs: tuple[tuple[str, str], ...]
    dbname: str | None
    password: str | None
    secrets: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, *, what: str) -> _Conninfo:
        """Raises BackupError (naming ``what``, scrubbed) for an unusable string."""
        if not isinstance(text, str) or not text.strip():
            raise BackupError(f"the {what} must be a PostgreSQL connection string or name")
        secrets = (*url_secrets(text),)
        if text.startswith(_URL_SCHEMES):
            problem = credentials_problem(text)
            if problem is not None:
                raise BackupError(f"the {what}: {problem}")
            parsed = cls._parse_url(text, secrets)
        elif "=" in text:
            parsed = cls._parse_pairs(text, secrets, what=what)
        else:
            return cls(None, (), text, None, secrets)
        if any(key == "sslpassword" for key, _ in parsed.pairs):
            # libpq reads it from the connection string only, which would put it in argv.
            raise BackupError(
                f"the {what} holds an sslpassword, which would show in the tools' argument "
                "list: use a client key without a passphrase, readable only by this user"
            )
        return parsed

    @classmethod
    def _parse_url(cls, text: str, secrets: tuple[str, ...]) -> _Conninfo:
        scheme = text[: text.index("://") + 3]
        rest = text[len(scheme) :]
        credentials = userinfo(text)
        password: str | None = None
        user = ""
        if credentials is not None:
            rest = rest[len(credentials) + 1 :]
            raw_user, colon, raw_password = credentials.partition(":")
            user = quote(unquote(raw_user), safe="") + "@" if raw_user else ""
            password = unquote(raw_password) if colon else None
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        hosts, tail = rest[:cut], rest[cut:]
        path, _, query = tail.partition("?")
        dbname = unquote(path[1:]) if path.startswith("/") and len(path) > 1 else None
        pairs: list[tuple[str, str]] = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "password":
                password = value
            elif key == "dbname":
                dbname = value
            else:
                pairs.append((key, value))
        if password is not None:
            secrets = (*secrets, password)
        return cls((scheme, user, hosts), tuple(pairs), dbname, password, secrets)

    @classmethod
    def _parse_pairs(cls, text: str, secrets: tuple[str, ...], *, what: str) -> _Conninfo:
        pairs = _libpq_pairs(text)
        if pairs is None:
            raise BackupError(
                f"the {what} {scrub(text, *secrets)!r} is not a valid connection string"
            )
        password = next((v for k, v in reversed(pairs) if k == "password"), None)
        dbname = next((v for k, v in reversed(pairs) if k == "dbname"), None)
        kept = tuple((k, v) for k, v in pairs if k not in {"password", "dbname"})
        if password is not None:
            secrets = (*secrets, password)
        return cls(None, kept, dbname, password, secrets)

    def with_dbname(self, dbname: str) -> _Conninfo:
        return replace(self, dbname=dbname)

    @property
    def conninfo(self) -> str:
        """The connection string for argv: everything but the password."""
        if self.url is not None:
            scheme, user, hosts = self.url
            path = "" if self.dbname is None else "/" + quote(self.dbname, safe="")
            query = urlencode(self.pairs, quote_via=quote)
            return f"{scheme}{user}{hosts}{path}{'?' + query if query else ''}"
        pairs = [*self.pairs, *([("dbname", self.dbname)] if self.dbname is not None else [])]
        return " ".join(f"{key}={_quote_value(value)}" for key, value in pairs)

    @property
    def shown(self) -> str:
        """The connection string fit for a message."""
        return repr(scrub(self.conninfo, *self.secrets))


def _libpq_pairs(text: str) -> list[tuple[str, str]] | None:
    """``key=value`` pairs as libpq reads them (quoted values, backslash escapes), or None."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            return pairs
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if not key or i == n or text[i] != "=":
            return None
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        quoted = i < n and text[i] == "'"
        i += quoted
        while i < n:
            char = text[i]
            if char == "\\" and i + 1 < n:
                value.append(text[i + 1])
                i += 2
                continue
            if (quoted and char == "'") or (not quoted and char.isspace()):
                break
            value.append(char)
            i += 1
        if quoted:
            if i == n:
                return None  # unterminated quote
            i += 1
        pairs.append((key, "".join(value)))


def _quote_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _restored_dump(restored: Path) -> Path:
    if restored.is_file():
        return restored
    found = sorted(restored.glob("*.pgdump")) if restored.is_dir() else []
    if len(found) != 1:
        raise BackupError(f"the restored tree holds {len(found)} *.pgdump files, expected one")
    return found[0]


def _find_tool(tool: str | Path, *, field: str) -> Path:
    """An executable PostgreSQL client tool: a path, or a name on PATH or in the
    Debian/Ubuntu versioned directories (newest first). Raises ConfigurationError."""
    if not isinstance(tool, str | Path) or not str(tool):
        raise ConfigurationError(f"{field} must be a program name or path", field=field)
    text = str(tool)
    if os.sep in text:
        candidates = [text]
    else:
        versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
        candidates = [shutil.which(text) or "", *(os.path.join(d, text) for d in versioned)]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ConfigurationError(
        f"{field}: {text!r} is not an executable program (install the PostgreSQL client "
        "tools or give its path)",
        field=field,
    )


def _version(directory: str) -> tuple[int, ...]:
    name = Path(directory).parent.name
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _check_passfile(passfile: str | Path) -> Path:
    if not isinstance(passfile, str | Path):
        raise ConfigurationError("passfile must be a path", field="passfile")
    path = Path(passfile)
    try:
        info = path.stat()
    except OSError:
        raise ConfigurationError(
            f"passfile {str(path)!r} does not exist", field="passfile"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(f"passfile {str(path)!r} is not a file", field="passfile")
    if info.st_mode & 0o077:
        # libpq silently ignores such a file; say so now rather than fail to log in later.
        raise ConfigurationError(
            f"passfile {str(path)!r} is readable by others: chmod 600 it", field="passfile"
        )
    return path
