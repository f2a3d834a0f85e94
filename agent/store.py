"""Persistence of practice sessions and their turns (SQLite by default, PostgreSQL via DATABASE_URL).

Why the store writes a turn in two steps: the trainee's words are saved (status ``pending``)
*before* the model is asked for the patient's answer, and the answer, mood and grade are added
as they arrive. A crash, a dead model server or a closed laptop therefore never loses what the
trainee already said, and a session can be resumed (or the failed turn retried) after a restart.

Why turns form a tree: "retry from this turn" lets a trainee answer an earlier patient line
differently. The new answer starts a new *branch* whose first turn has the same parent as the
turn it replaces; the old branch is kept, so the history of attempts is never rewritten. A
session's ``active_branch`` says which leaf the conversation currently continues from.

The API speaks pydantic records (:class:`SessionRecord`, :class:`TurnRecord`), never ORM
objects, so callers (session loop, app, CLI) do not depend on SQLAlchemy or on open sessions.

Configuration: ``DATABASE_URL`` (any SQLAlchemy URL, e.g.
``postgresql+psycopg://user:pass@host/db``); otherwise a SQLite file ``deescalate.db`` in
``$DEESCALATE_DATA_DIR`` or ``$XDG_DATA_HOME/deescalate`` (``~/.local/share/deescalate``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from agent.grades import TurnGrade
from agent.mood import Mood
from agent.report import Scorecard
from agent.transcript import Transcript

TurnStatus = Literal["pending", "complete", "failed"]
JsonDict = dict[str, Any]


class StoreError(RuntimeError):
    """A store operation referred to something that does not exist or is not allowed."""


class StoreUnavailable(StoreError):
    """The database could not do the write (or read) now: locked by another program, disk full,
    server gone. Nothing was written by the failed call; the same call can be tried again later.
    ``why`` says what happened in words a trainee can act on."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the database could not save this: {why}")
        self.why = why


def _unavailable(exc: OperationalError) -> StoreUnavailable:
    detail = str(exc.orig or exc).splitlines()[0][:200]
    lowered = detail.lower()
    if "locked" in lowered or "busy" in lowered:
        return StoreUnavailable("the database is locked by another program")
    if "full" in lowered or "no space" in lowered:
        return StoreUnavailable("the disk is full")
    return StoreUnavailable(f"the database failed ({detail})")


# --------------------------------------------------------------------------------------------
# Records: the public API


class SessionRecord(BaseModel):
    """One practice session as stored (what the History tab lists and a resume starts from)."""

    model_config = ConfigDict(frozen=True)

    id: str
    persona_id: str
    rubric_id: str
    trainee_name: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str | None = None
    end_reason: str | None = None
    backend: str | None = None
    model: str | None = None
    opening: str | None = Field(default=None, description="the patient's first line, said before any trainee turn")
    initial_mood: Mood | None = None
    scorecard: Scorecard | None = None
    active_branch: int = 0
    owner: str | None = Field(default=None, description="who may see and continue it (agent.practice.Practice)")

    @field_validator("scorecard", mode="before")
    @classmethod
    def _old_scorecard(cls, value: object) -> object:
        """A scorecard saved in an older shape is not shown (its session and turns still are)."""
        if value is None or isinstance(value, Scorecard):
            return value
        try:
            return Scorecard.model_validate(value)
        except ValidationError:
            return None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


class TurnRecord(BaseModel):
    """One trainee turn: what the trainee said and, once known, the patient's answer and the grade."""

    model_config = ConfigDict(frozen=True)

    id: int
    session_id: str
    index: int = Field(description="0-based position of this trainee turn in its conversation path")
    branch: int
    parent_id: int | None = Field(default=None, description="the previous turn on this path; None for the first")
    trainee_text: str
    patient_reply: str | None = None
    mood_before: Mood | None = None
    mood_after: Mood | None = None
    grade: TurnGrade | None = None
    status: TurnStatus = "pending"
    error: str | None = None
    created_at: datetime
    updated_at: datetime


class NewSession(BaseModel):
    """What it takes to start a session."""

    persona_id: str = Field(min_length=1)
    rubric_id: str = Field(min_length=1)
    trainee_name: str | None = None
    backend: str | None = None
    model: str | None = None
    opening: str | None = None
    initial_mood: Mood | None = None
    owner: str | None = None


# --------------------------------------------------------------------------------------------
# Tables


class _Base(DeclarativeBase):
    type_annotation_map = {JsonDict: JSON}


def _now() -> datetime:
    return datetime.now(UTC)


class _SessionRow(_Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    persona_id: Mapped[str] = mapped_column(Text, index=True)
    rubric_id: Mapped[str] = mapped_column(Text)
    trainee_name: Mapped[str | None] = mapped_column(Text, index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(Text)
    end_reason: Mapped[str | None] = mapped_column(Text)
    backend: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    opening: Mapped[str | None] = mapped_column(Text)
    initial_mood: Mapped[JsonDict | None]
    scorecard: Mapped[JsonDict | None]
    active_branch: Mapped[int] = mapped_column(Integer, default=0)
    # branch number (as text: JSON keys) -> the turn it continues from (None: from the opening line)
    forks: Mapped[JsonDict | None]
    # who may see and continue the session: a browser's key, "api", or None (sessions from before keys)
    owner: Mapped[str | None] = mapped_column(String(80), index=True)


class _TurnRow(_Base):
    __tablename__ = "turns"
    # One turn per place in a conversation: two workers racing to write the same turn cannot both win.
    __table_args__ = (UniqueConstraint("session_id", "branch", "index", name="uq_turns_session_branch_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    branch: Mapped[int] = mapped_column(Integer, default=0)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("turns.id"))
    trainee_text: Mapped[str] = mapped_column(Text)
    patient_reply: Mapped[str | None] = mapped_column(Text)
    mood_before: Mapped[JsonDict | None]
    mood_after: Mapped[JsonDict | None]
    grade: Mapped[JsonDict | None]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we write is UTC, so say so."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _session_record(row: _SessionRow) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        persona_id=row.persona_id,
        rubric_id=row.rubric_id,
        trainee_name=row.trainee_name,
        started_at=_utc(row.started_at),
        ended_at=_utc(row.ended_at),
        outcome=row.outcome,
        end_reason=row.end_reason,
        backend=row.backend,
        model=row.model,
        opening=row.opening,
        initial_mood=row.initial_mood,
        scorecard=row.scorecard,
        active_branch=row.active_branch,
        owner=row.owner,
    )


def _turn_record(row: _TurnRow) -> TurnRecord:
    return TurnRecord(
        id=row.id,
        session_id=row.session_id,
        index=row.index,
        branch=row.branch,
        parent_id=row.parent_id,
        trainee_text=row.trainee_text,
        patient_reply=row.patient_reply,
        mood_before=row.mood_before,
        mood_after=row.mood_after,
        grade=row.grade,
        status=row.status,  # type: ignore[arg-type]
        error=row.error,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _jsonable(value: BaseModel | Mapping[str, Any] | None) -> JsonDict | None:
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return TypeAdapter(dict[str, Any]).dump_python(dict(value), mode="json")
    raise TypeError(f"expected a pydantic model or a mapping, got {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Location


def data_dir() -> Path:
    """``$DEESCALATE_DATA_DIR`` or ``$XDG_DATA_HOME/deescalate`` (``~/.local/share/deescalate``)."""
    explicit = os.environ.get("DEESCALATE_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "deescalate"


def database_url() -> str:
    """``$DATABASE_URL`` if set, else the SQLite file in :func:`data_dir`.

    A bare ``postgresql://`` URL is mapped to the psycopg 3 driver, the one the project installs.
    """
    url = os.environ.get("DATABASE_URL")
    if url:
        if url.startswith("postgres://"):
            url = "postgresql://" + url.removeprefix("postgres://")
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url
    return f"sqlite:///{data_dir() / 'deescalate.db'}"


# How long a SQLite write waits for another program's write lock before it fails with "locked".
BUSY_TIMEOUT_MS = 5000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL: readers never block the writer and a committed turn survives a crash of the app."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Gradio runs handlers on worker threads; the connection pool hands each one its own connection.
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _add_missing_columns(engine: Engine) -> None:
    """A database made by an older version lacks columns added since: add them (nullable, so old
    rows stay as they were). ``create_all`` only creates missing tables."""
    from sqlalchemy import inspect, text

    inspector = inspect(engine)
    for table in _Base.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as connection:
                    connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


# --------------------------------------------------------------------------------------------
# The store


class Store:
    """Sessions and turns in one database. Thread-safe: every call uses its own DB session."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None) -> None:
        self.url = url or database_url()
        self.engine = engine or make_engine(self.url)
        _Base.metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_env(cls) -> Store:
        return cls(database_url())

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """One transaction; a database that cannot do it now (locked, disk full) is a
        :class:`StoreUnavailable`, rolled back whole, so the caller may try again."""
        try:
            with self._sessions() as db, db.begin():
                yield db
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    # -- sessions -----------------------------------------------------------------------------

    def create_session(self, new: NewSession) -> SessionRecord:
        row = _SessionRow(
            id=uuid.uuid4().hex,
            persona_id=new.persona_id,
            rubric_id=new.rubric_id,
            trainee_name=(new.trainee_name or "").strip() or None,
            started_at=_now(),
            backend=new.backend,
            model=new.model,
            opening=new.opening,
            initial_mood=_jsonable(new.initial_mood),
            active_branch=0,
            owner=new.owner,
        )
        with self._tx() as db:
            db.add(row)
        return _session_record(row)

    def _session_row(self, db: Session, session_id: str) -> _SessionRow:
        row = db.get(_SessionRow, session_id)
        if row is None:
            raise StoreError(f"no session {session_id!r}")
        return row

    def get_session(self, session_id: str) -> SessionRecord:
        with self._tx() as db:
            return _session_record(self._session_row(db, session_id))

    def list_sessions(
        self, *, trainee_name: str | None = None, persona_id: str | None = None, ended: bool | None = None,
        limit: int = 200, owner: str | None = None,
    ) -> list[SessionRecord]:  # fmt: skip
        """Newest first; ``owner`` keeps one owner's sessions only."""
        query = select(_SessionRow)
        if owner is not None:
            query = query.where(_SessionRow.owner == owner)
        if trainee_name is not None:
            query = query.where(_SessionRow.trainee_name == trainee_name)
        if persona_id is not None:
            query = query.where(_SessionRow.persona_id == persona_id)
        if ended is True:
            query = query.where(_SessionRow.ended_at.is_not(None))
        elif ended is False:
            query = query.where(_SessionRow.ended_at.is_(None))
        query = query.order_by(_SessionRow.started_at.desc()).limit(limit)
        with self._tx() as db:
            return [_session_record(row) for row in db.scalars(query)]

    def end_session(
        self, session_id: str, *, outcome: str | None, reason: str | None = None,
        scorecard: BaseModel | Mapping[str, Any] | None = None,
    ) -> SessionRecord:  # fmt: skip
        with self._tx() as db:
            row = self._session_row(db, session_id)
            row.ended_at = _now()
            row.outcome = outcome
            row.end_reason = reason
            if scorecard is not None:
                row.scorecard = _jsonable(scorecard)
            return _session_record(row)

    def set_scorecard(self, session_id: str, scorecard: BaseModel | Mapping[str, Any]) -> SessionRecord:
        with self._tx() as db:
            row = self._session_row(db, session_id)
            row.scorecard = _jsonable(scorecard)
            return _session_record(row)

    def delete_session(self, session_id: str) -> None:
        with self._tx() as db:
            self._session_row(db, session_id)
            # Parent links cross branches inside a session: cut them before deleting the turns.
            db.execute(update(_TurnRow).where(_TurnRow.session_id == session_id).values(parent_id=None))
            db.execute(delete(_TurnRow).where(_TurnRow.session_id == session_id))
            db.execute(delete(_SessionRow).where(_SessionRow.id == session_id))

    # -- turns --------------------------------------------------------------------------------

    def _turn_row(self, db: Session, turn_id: int) -> _TurnRow:
        row = db.get(_TurnRow, turn_id)
        if row is None:
            raise StoreError(f"no turn {turn_id}")
        return row

    def _leaf(self, db: Session, session_id: str, branch: int) -> _TurnRow | None:
        query = (
            select(_TurnRow)
            .where(_TurnRow.session_id == session_id, _TurnRow.branch == branch)
            .order_by(_TurnRow.index.desc(), _TurnRow.id.desc())
            .limit(1)
        )
        return db.scalars(query).first()

    def _path(self, db: Session, session_id: str, branch: int) -> list[_TurnRow]:
        rows = {row.id: row for row in db.scalars(select(_TurnRow).where(_TurnRow.session_id == session_id))}
        leaf = self._leaf(db, session_id, branch)
        path: list[_TurnRow] = []
        while leaf is not None:
            path.append(leaf)
            leaf = rows.get(leaf.parent_id) if leaf.parent_id is not None else None
        path.reverse()
        return path

    def get_turn(self, turn_id: int) -> TurnRecord:
        with self._tx() as db:
            return _turn_record(self._turn_row(db, turn_id))

    def begin_turn(
        self, session_id: str, trainee_text: str, *, mood_before: BaseModel | Mapping[str, Any] | None = None,
        mood_after: BaseModel | Mapping[str, Any] | None = None, grade: BaseModel | Mapping[str, Any] | None = None,
    ) -> TurnRecord:  # fmt: skip
        """Save what the trainee said, as a ``pending`` turn, *before* any model is called.

        The verdicts (``grade``) and the mood they moved to are known by then and saved with it.

        The turn continues the session's active branch. A session may not take a new turn while
        its last one is still pending or failed: that one must be retried (:meth:`retry_turn`) or
        branched away from first, so the stored conversation never has a hole in it.
        """
        with self._tx() as db:
            # Locks the session's row until the turn is written (PostgreSQL; SQLite locks the whole
            # database for a write), so app workers in other processes cannot interleave a turn.
            session = db.get(_SessionRow, session_id, with_for_update=True)
            if session is None:
                raise StoreError(f"no session {session_id!r}")
            if session.ended_at is not None:
                raise StoreError(f"session {session_id} has ended")
            leaf = self._leaf(db, session_id, session.active_branch)
            if leaf is not None and leaf.status != "complete":
                raise StoreError(f"turn {leaf.index} of session {session_id} is {leaf.status}; retry it first")
            parent_id, index = self._continuation(db, session, leaf)
            row = _TurnRow(
                session_id=session_id,
                index=index,
                branch=session.active_branch,
                parent_id=parent_id,
                trainee_text=trainee_text,
                mood_before=_jsonable(mood_before),
                mood_after=_jsonable(mood_after),
                grade=_jsonable(grade),
                status="pending",
                created_at=_now(),
                updated_at=_now(),
            )
            db.add(row)
            try:
                db.flush()
            except IntegrityError as exc:  # another worker wrote this turn first
                raise StoreError("this session is still answering the previous reply") from exc
            return _turn_record(row)

    def _continuation(self, db: Session, session: _SessionRow, leaf: _TurnRow | None) -> tuple[int | None, int]:
        """(parent id, index) for the next turn on the active branch."""
        if leaf is not None:
            return leaf.id, leaf.index + 1
        # A fresh branch with no turns yet: it continues from its recorded fork point.
        fork = (session.forks or {}).get(str(session.active_branch))
        parent = db.get(_TurnRow, fork) if fork is not None else None
        return (parent.id, parent.index + 1) if parent is not None else (None, 0)

    def complete_turn(
        self, turn_id: int, *, patient_reply: str, mood_after: BaseModel | Mapping[str, Any] | None = None,
        grade: BaseModel | Mapping[str, Any] | None = None,
    ) -> TurnRecord:  # fmt: skip
        with self._tx() as db:
            row = self._turn_row(db, turn_id)
            row.patient_reply = patient_reply
            if mood_after is not None:
                row.mood_after = _jsonable(mood_after)
            if grade is not None:
                row.grade = _jsonable(grade)
            row.status = "complete"
            row.error = None
            row.updated_at = _now()
            return _turn_record(row)

    def set_grade(self, turn_id: int, grade: BaseModel | Mapping[str, Any]) -> TurnRecord:
        """The LLM part of a grade arrives after the patient answered; it is added in place."""
        with self._tx() as db:
            row = self._turn_row(db, turn_id)
            row.grade = _jsonable(grade)
            row.updated_at = _now()
            return _turn_record(row)

    def fail_turn(self, turn_id: int, error: str) -> TurnRecord:
        """The model could not answer: keep the trainee's text, note why, let the UI offer a retry."""
        with self._tx() as db:
            row = self._turn_row(db, turn_id)
            row.status = "failed"
            row.error = error
            row.updated_at = _now()
            return _turn_record(row)

    def retry_turn(self, turn_id: int) -> TurnRecord:
        """Mark a failed (or orphaned pending) turn pending again, with the same trainee text."""
        with self._tx() as db:
            row = self._turn_row(db, turn_id)
            if row.status == "complete":
                raise StoreError(f"turn {turn_id} is complete; use branch_from to answer it differently")
            row.status = "pending"
            row.error = None
            row.patient_reply = None
            row.updated_at = _now()
            return _turn_record(row)

    def branch_from(self, session_id: str, index: int) -> int:
        """Start a new branch that replaces trainee turn ``index`` of the active path.

        Returns the new branch number, which becomes the session's active branch; the next
        :meth:`begin_turn` writes turn ``index`` on it. Earlier turns are shared, not copied.
        """
        with self._tx() as db:
            session = self._session_row(db, session_id)
            if session.ended_at is not None:
                raise StoreError(f"session {session_id} has ended")
            path = self._path(db, session_id, session.active_branch)
            if not 0 <= index < len(path):
                raise StoreError(f"session {session_id} has no trainee turn {index} to retry from")
            forks = dict(session.forks or {})
            highest = db.scalar(select(func.max(_TurnRow.branch)).where(_TurnRow.session_id == session_id)) or 0
            new_branch = max([highest, session.active_branch, *(int(k) for k in forks)]) + 1
            forks[str(new_branch)] = path[index].parent_id
            session.forks = forks  # a new dict, so SQLAlchemy sees the change
            session.active_branch = new_branch
            return new_branch

    def turns(self, session_id: str, *, branch: int | None = None) -> list[TurnRecord]:
        """The conversation path ending at ``branch``'s last turn (default: the active branch)."""
        with self._tx() as db:
            session = self._session_row(db, session_id)
            chosen = session.active_branch if branch is None else branch
            path = self._path(db, session_id, chosen)
            if not path:
                # A fresh branch with no turns yet: its path is the shared prefix it forked from.
                fork = (session.forks or {}).get(str(chosen))
                if fork is not None:
                    path = self._path_to(db, session_id, fork)
            return [_turn_record(row) for row in path]

    def _path_to(self, db: Session, session_id: str, turn_id: int) -> list[_TurnRow]:
        rows = {row.id: row for row in db.scalars(select(_TurnRow).where(_TurnRow.session_id == session_id))}
        path: list[_TurnRow] = []
        current = rows.get(turn_id)
        while current is not None:
            path.append(current)
            current = rows.get(current.parent_id) if current.parent_id is not None else None
        path.reverse()
        return path

    def all_turns(self, session_id: str) -> list[TurnRecord]:
        """Every turn of every branch, in the order they were written."""
        with self._tx() as db:
            self._session_row(db, session_id)
            query = select(_TurnRow).where(_TurnRow.session_id == session_id).order_by(_TurnRow.id)
            return [_turn_record(row) for row in db.scalars(query)]

    def open_turn(self, session_id: str) -> TurnRecord | None:
        """The active path's last turn if it still waits for the model (pending or failed), else None.

        After a restart a ``pending`` turn means the app died mid-turn: the UI offers to retry it.
        """
        path = self.turns(session_id)
        if path and path[-1].status != "complete":
            return path[-1]
        return None

    def transcript(self, session_id: str) -> Transcript:
        """The active conversation as a :class:`Transcript` (opening line, then each answered turn).

        A turn still waiting for the model contributes the trainee's words only, which is what
        the patient chain needs when the turn is retried.
        """
        session = self.get_session(session_id)
        transcript = Transcript()
        if session.opening:
            transcript.add("patient", session.opening)
        for turn in self.turns(session_id):
            transcript.add("trainee", turn.trainee_text)
            if turn.status == "complete" and turn.patient_reply is not None:
                transcript.add("patient", turn.patient_reply)
        return transcript
