"""Message lists a client sends, merged into the session's message tree (protocol §11.1).

A chat request, a client-pushed transcript (`cf_agent_chat_messages`) and `save_messages`
carry the conversation as the client sees it. Reconciling maps it onto what is stored (server
tool results win, client-minted ids adopt stored ones); upserting writes what changed, moves
the active leaf and forks an edited message into a branch. A chat request's admission does
this inside its turn's transaction (turns/chat.py), and may take the session's turn lock in
the same write (the lock is turns/turn_lock.py's). The read side of the tree is
storage/transcript.py.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import NotSupportedError, connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Exists, F, Func, JSONField, QuerySet, TextField
from django.utils import timezone

from agents_app.protocol.messages import SETTLED_TOOL_STATES, UIMessage, is_tool_part, sanitize_for_persistence
from agents_app.storage import row_writes, unfinished_turns
from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.models import Compaction, Message, Session
from agents_app.storage.transcript import (
    StoredMessage,
    StoredRow,
    newest_childless,
    strip_computed_metadata,
    with_branches,
    write_message,
)

_UNSETTLED_CLIENT_STATES = frozenset({"input-available", "approval-requested", "approval-responded"})


def _tool_parts(message: UIMessage) -> list[dict[str, Any]]:
    return [part for part in message.get("parts", []) if is_tool_part(part)]


def _settled_tool_parts(stored: Iterable[StoredRow]) -> dict[str, tuple[str, dict[str, Any]]]:
    """toolCallId → (owning message uid, settled part) for every settled tool part stored."""
    settled: dict[str, tuple[str, dict[str, Any]]] = {}
    for message in stored:
        if message.role != "assistant":
            continue
        uid = message.uid
        for part in message.parts or []:
            if is_tool_part(part) and part.get("toolCallId"):
                if part.get("state") in SETTLED_TOOL_STATES or part["toolCallId"] not in settled:
                    settled[part["toolCallId"]] = (uid, part)
    return settled


def reconcile(stored: dict[str, StoredRow], incoming: list[UIMessage]) -> list[UIMessage]:
    """Apply the reference's reconciliation rules to a client-sent list (protocol §11.1);
    `stored` is every message of the session (all branches) by id."""
    tool_owners = _settled_tool_parts(stored.values())
    result: list[UIMessage] = []
    claimed = {m["id"] for m in incoming if m["id"] in stored}
    unclaimed_plain = [
        m
        for m in stored.values()
        if m.role == "assistant" and m.uid not in claimed and not _tool_parts({"parts": m.parts})
    ]
    for message in incoming:
        message = dict(message, parts=[dict(part) for part in message.get("parts", [])])
        if message["role"] == "assistant":
            # 1. Server tool results win over a stale client copy.
            for part in _tool_parts(message):
                owner = tool_owners.get(part.get("toolCallId", ""))
                if owner and part.get("state") in _UNSETTLED_CLIENT_STATES:
                    server_part = owner[1]
                    if server_part.get("state") in SETTLED_TOOL_STATES:
                        part["state"] = server_part["state"]
                        for key in ("output", "errorText", "approval"):
                            part.pop(key, None)
                            if key in server_part:
                                part[key] = server_part[key]
            if message["id"] not in stored:
                # 3. A toolCallId already owned by a stored message keeps that message's id.
                owner_ids = {tool_owners[p["toolCallId"]][0] for p in _tool_parts(message) if p.get("toolCallId") in tool_owners}
                if len(owner_ids) == 1:
                    message["id"] = owner_ids.pop()
                elif not _tool_parts(message):
                    # 2. Same content under a client-minted id adopts the stored id.
                    wanted = json.dumps(sanitize_for_persistence(message)["parts"], sort_keys=True)
                    for candidate in unclaimed_plain:
                        if json.dumps(candidate.parts, sort_keys=True) == wanted:
                            message["id"] = candidate.uid
                            unclaimed_plain.remove(candidate)
                            break
        result.append(message)
    return result


def _edited(stored: StoredRow, incoming: UIMessage) -> bool:
    """A user message resent with other content after it was answered: an edit."""
    clean = sanitize_for_persistence(incoming)
    return stored.role == "user" and stored.parts != clean["parts"] and Message.objects.filter(parent_id=stored.pk).exists()


def _fork_for_edit(session: Session, stored: StoredRow, incoming: UIMessage) -> StoredRow:
    """Keep the original (and its answers) as a branch under a variant id, and store the edited
    text as a sibling under the client's id, so client and server keep agreeing on ids."""
    variant = 1
    while session.messages.filter(uid=f"{stored.uid}~{variant}").exists():
        variant += 1
    Message.objects.filter(pk=stored.pk).update(uid=f"{stored.uid}~{variant}")
    return write_message(session, incoming, stored.parent_id, None)


# The session's row (with its agent's) and every message of the session and the turns not
# finished yet, in one statement, one row: read by every turn's admission inside its write
# transaction, once the row is locked (SQLite's write transaction, or a locking statement
# first: a statement that waits for a row lock gets that row as the other transaction left
# it, but what it reads besides as it was when the statement began, without the messages the
# other transaction added). The messages come as one JSON array (`_MessagesAsJSON`): joined,
# each message's row would repeat the session's columns, its state included. The row is the
# one the turn then runs over, with what its agent class reads before every turn
# (`turn_session_annotations`): a turn that takes the lock at admission reads nothing more
# before its model request.
_LOCK_SESSION_ROW = CompiledQuery(lambda pk: Session.objects.select_for_update().filter(pk=pk).order_by().values_list("pk"))
# The owner's row first, then the session's, in one statement (FOR UPDATE without OF locks
# the rows of every table it reads, in the order they are named): a user's admissions count
# that user's turns one after another, so that parallel ones cannot all slip under the
# per-user limit.
_LOCK_OWNER_AND_SESSION_ROWS = CompiledQuery(
    lambda pk: get_user_model().objects.select_for_update().filter(agent_sessions__pk=pk).order_by().values_list("pk")
)
_MESSAGE_FIELDS = ("id", "uid", "parent_id", "role", "parts", "metadata")
COMPACTED, STORED_MESSAGES = "admission_compacted", "admission_messages"


class _MessagesAsJSON(Func):
    """Every message of the query's session as one JSON array of
    `[id, uid, parent_id, role, parts, metadata]` arrays, in no particular order (SQL NULL
    for a session without messages). Only what reconciling and writing use of a message: not
    the dates to convert, nor the search text."""

    output_field = TextField()

    def __init__(self) -> None:
        super().__init__(F("pk"))

    def _sql(self, compiler: Any, connection: BaseDatabaseWrapper, template: str, wrap_json: str) -> tuple[str, list[Any]]:
        session, params = compiler.compile(self.get_source_expressions()[0])
        quote = connection.ops.quote_name
        table = quote(Message._meta.db_table)
        fields = [Message._meta.get_field(name) for name in _MESSAGE_FIELDS]
        columns = ", ".join(
            f"{wrap_json}({table}.{quote(field.column)})" if wrap_json and isinstance(field, JSONField) else f"{table}.{quote(field.column)}"
            for field in fields
        )
        where = f"{table}.{quote(Message._meta.get_field('session').column)} = {session}"
        return template.format(columns=columns, table=table, where=where), list(params)

    def as_sqlite(self, compiler: Any, connection: BaseDatabaseWrapper, **extra: Any) -> tuple[str, list[Any]]:
        # A JSON column is text here: json() embeds it as JSON, not as a string.
        template = "(SELECT json_group_array(json_array({columns})) FROM {table} WHERE {where})"
        return self._sql(compiler, connection, template, "json")

    def as_postgresql(self, compiler: Any, connection: BaseDatabaseWrapper, **extra: Any) -> tuple[str, list[Any]]:
        template = "(SELECT json_agg(json_build_array({columns}))::text FROM {table} WHERE {where})"
        return self._sql(compiler, connection, template, "")

    def as_sql(self, compiler: Any, connection: BaseDatabaseWrapper, **extra: Any) -> tuple[str, list[Any]]:
        raise NotSupportedError(f"reading a session's messages as JSON is not written for {connection.vendor}")


def _admission_read(pk: Any, owner: Any | None, annotated_for: type[Any] | None) -> QuerySet[Session]:
    # A plain (non-chat) agent class reads nothing before its turns.
    before_turn: dict[str, Any] = getattr(annotated_for, "turn_session_annotations", dict)()
    return (
        Session.objects.select_related("agent")
        .filter(pk=pk)
        .order_by()
        .annotate(
            **{COMPACTED: Exists(Compaction.objects.filter(session_id=pk)), STORED_MESSAGES: _MessagesAsJSON()},
            **unfinished_turns.annotations(pk, owner),
            **before_turn,
        )
    )


# By (agent class, whose owner's turns are counted too): compiled once each.
_ADMISSION_READS: dict[tuple[type[Any] | None, bool], CompiledQuery] = {}


def _read_for_admission(session_id: int, owner_id: int | None, annotated_for: type[Any] | None) -> Session | None:
    key = (annotated_for, owner_id is not None)
    query = _ADMISSION_READS.get(key)
    if query is None:
        if owner_id is None:
            built = CompiledQuery(lambda pk: _admission_read(pk, None, annotated_for))
        else:
            built = CompiledQuery(lambda pk, owner: _admission_read(pk, owner, annotated_for))
        query = _ADMISSION_READS.setdefault(key, built)
    return query.instance(session_id) if owner_id is None else query.instance(session_id, owner_id)


@dataclass
class LockedSession:
    """The session as admission reads it, locked: its row (with its agent's, kept in step
    with what the admission writes to it), every message of the session, and its unfinished
    turns (its owner's too, when asked for)."""

    row: Session
    compacted: bool
    unfinished: unfinished_turns.UnfinishedTurns
    messages: dict[str, StoredRow]


def lock_session(session_id: int, owner_id: int | None = None, annotated_for: type[Any] | None = None) -> LockedSession:
    """Call inside a transaction: the session's row stays locked until it ends. `owner_id`:
    count that user's unfinished turns too, and lock that user's row first (PostgreSQL;
    SQLite's write transaction serialises every admission already). `annotated_for`: the
    session's agent class, whose `turn_session_annotations` the row is read with."""
    if connection.features.has_select_for_update:  # SQLite's write transaction locks everything already
        if owner_id is None:
            _LOCK_SESSION_ROW.row(session_id)
        else:
            _LOCK_OWNER_AND_SESSION_ROWS.row(session_id)
    row = _read_for_admission(session_id, owner_id, annotated_for)
    if row is None:
        raise Session.DoesNotExist(f"session {session_id} no longer exists")
    listed = json.loads(getattr(row, STORED_MESSAGES) or "[]")
    messages = {
        uid: StoredMessage(pk, uid, parent_id, role, parts, metadata)
        for pk, uid, parent_id, role, parts, metadata in sorted(listed, key=lambda message: message[0])
    }
    counted = (unfinished_turns.QUEUED, unfinished_turns.IN_SESSION) + (() if owner_id is None else (unfinished_turns.OF_OWNER,))
    counts = unfinished_turns.UnfinishedTurns.of(*(getattr(row, name) for name in counted))
    return LockedSession(row, bool(getattr(row, COMPACTED)), counts, messages)


@dataclass
class AdmittedMessages:
    """What a chat request's admission stored: whether it took the turn lock, and the
    transcript its turn answers (None when it must be read: an edit forked the tree, or
    the session has compaction overlays)."""

    holds_lock: bool
    transcript: list[UIMessage] | None


def _transcript_in_memory(leaf: StoredRow | None, by_pk: dict[int, StoredRow]) -> list[UIMessage]:
    """`transcript.transcript` over every message of the session, already in memory as written: the
    path root → `leaf`, with the same branch metadata."""
    path = []
    while leaf is not None:
        path.append(leaf)
        leaf = by_pk.get(leaf.parent_id) if leaf.parent_id is not None else None
    path.reverse()
    siblings: dict[int | None, list[str]] = {}
    for pk in sorted(by_pk):
        siblings.setdefault(by_pk[pk].parent_id, []).append(by_pk[pk].uid)
    return with_branches(path, siblings)


def upsert(
    session: Session, incoming: list[UIMessage], *, move_leaf: bool, clear_terminal: bool = False
) -> list[UIMessage]:
    """Reconcile and upsert a client's message list.

    Known ids are updated in place. New ids are appended under the current leaf. With
    `move_leaf` (chat requests) and a list made only of known ids, the active leaf moves to
    the last incoming message: the reference deletes the rows after it, we keep them as a
    branch. An edited user message becomes a sibling of the original. With `clear_terminal`
    (a new turn answers these messages) the last failed turn's record is cleared in the
    same write as the leaf. Returns the reconciled list.
    """
    return _upsert(session, incoming, None, move_leaf=move_leaf, clear_terminal=clear_terminal, lock_for=None)[0]


def admit(
    session: Session, incoming: list[UIMessage], *, lock_for: str | None, locked: LockedSession | None = None
) -> AdmittedMessages:
    """A chat request's messages, stored as `upsert` stores them (the leaf moves, the last
    failure is cleared) inside its turn's admission transaction, over `locked` (the session
    as that transaction read it, when it did: `lock_session`). With `lock_for` (a request id
    whose turn no other turn of the session precedes), the same write also takes the
    session's turn lock for it if nobody holds it (the compare-and-set of turns/turn_lock.py,
    made on the row this transaction has locked); such a turn is also given its transcript,
    as this write leaves it, so that it need not read it again."""
    return _upsert(session, incoming, locked, move_leaf=True, clear_terminal=True, lock_for=lock_for)[1]


# No savepoint: inside a caller's transaction (turn admission) a failure fails that whole
# transaction anyway, and two fewer round trips precede every turn.
@transaction.atomic(savepoint=False)
def _upsert(
    session: Session,
    incoming: list[UIMessage],
    locked: LockedSession | None,
    *,
    move_leaf: bool,
    clear_terminal: bool,
    lock_for: str | None,
) -> tuple[list[UIMessage], AdmittedMessages]:
    if locked is None:
        locked = lock_session(session.pk)
    stored = locked.messages
    reconciled = [strip_computed_metadata(m) for m in reconcile(stored, incoming)]
    all_known = bool(reconciled) and all(m["id"] in stored for m in reconciled)
    by_pk = {m.pk: m for m in stored.values()}
    row = locked.row
    leaf = by_pk.get(row.active_leaf_id) if row.active_leaf_id is not None else newest_childless(by_pk)
    forked = False
    for message in reconciled:
        existing = stored.get(message["id"])
        if existing is not None and move_leaf and _edited(existing, message):
            stored[message["id"]] = _fork_for_edit(session, existing, message)
            forked = True
            continue
        written = write_message(session, message, leaf.pk if leaf is not None else None, existing)
        if existing is None:
            leaf = by_pk[written.pk] = written
    if move_leaf and all_known:
        leaf = stored[reconciled[-1]["id"]]
    changes: dict[str, Any] = {}
    if leaf is not None and leaf.pk != row.active_leaf_id:
        changes["active_leaf_id"] = leaf.pk
    if clear_terminal and row.terminal is not None:
        changes["terminal"] = None
    lock_taken = lock_for is not None and not row.turn_lock
    if lock_taken:
        changes.update(turn_lock=lock_for, turn_lock_heartbeat=timezone.now())
    if changes:
        row_writes.update(Session, {"pk": session.pk}, **changes)
        for name, value in changes.items():
            setattr(row, name, value)
    known = lock_taken and not forked and not locked.compacted
    return reconciled, AdmittedMessages(lock_taken, _transcript_in_memory(leaf, by_pk) if known else None)
