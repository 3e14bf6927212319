"""The message tree: path queries, branches, and the server's own writes (protocol §11).

The conversation is the path root → `Session.active_leaf`. Nothing here deletes a message to
"truncate" a conversation: regenerate and edit move the active leaf, so older branches stay
reachable while the wire behaviour matches the reference (the client sees the active path).
All functions are synchronous ORM code; async callers wrap them with `sync_to_async`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from agents_app.protocol.messages import UIMessage, sanitize_for_persistence
from agents_app.protocol.row_size import fit_row_size
from agents_app.storage import row_writes
from agents_app.storage.compiled_query import CompiledQuery, json_value
from agents_app.storage.models import Message, Session, searchable_text
from agents_app.storage.overlays import compaction_marks

_PATH_SQL = """
WITH RECURSIVE path(id, parent_id, height) AS (
    SELECT id, parent_id, 0 FROM agents_app_message WHERE id = {leaf}
    UNION ALL
    SELECT m.id, m.parent_id, path.height + 1 FROM agents_app_message m JOIN path ON m.id = path.parent_id
)
SELECT {columns} FROM path JOIN agents_app_message m ON m.id = path.id ORDER BY path.height DESC
"""
_GIVEN_LEAF = "%s"
_SESSION_LEAF = "(SELECT active_leaf_id FROM agents_app_session WHERE id = %s)"
# Whether the message has a sibling: one index probe (message_children_idx) per message on
# the path, instead of grouping every message of the session.
_FORKED = (
    "(EXISTS(SELECT 1 FROM agents_app_message s WHERE s.session_id = m.session_id AND s.parent_id = m.parent_id AND s.id <> m.id)"
    " OR (m.parent_id IS NULL AND EXISTS(SELECT 1 FROM agents_app_message s"
    " WHERE s.session_id = m.session_id AND s.parent_id IS NULL AND s.id <> m.id)))"
)
_NODE_COLUMNS = "m.id, m.session_id, m.uid, m.parent_id, m.role, m.parts, m.metadata, " + _FORKED
_COMPACTED = "EXISTS(SELECT 1 FROM agents_app_compaction WHERE session_id = %s)"


class PathNode(NamedTuple):
    """A message on a path, read without model instantiation: the hot read of every turn
    (a tuple, because building thousands of them must cost next to nothing)."""

    id: int
    session_id: int
    uid: str
    parent_id: int | None
    role: str
    parts: list[dict[str, Any]]
    metadata: Any
    forked: bool  # it has siblings: another answer to the same message, or an edit

    def as_ui_message(self) -> UIMessage:
        return _ui_message(self.uid, self.role, self.parts, self.metadata)


def _ui_message(uid: str, role: str, parts: Any, metadata: Any) -> UIMessage:
    message: UIMessage = {"id": uid, "role": role, "parts": parts}
    if metadata is not None:
        message["metadata"] = metadata
    return message


class SessionPath(NamedTuple):
    nodes: list[PathNode]
    compacted: bool  # the session has compaction overlays (only then are they read)


def path_nodes(leaf_id: int | None) -> list[PathNode]:
    """Messages from the root down to `leaf_id`: one recursive query, O(depth)."""
    if leaf_id is None:
        return []
    return _read_path(_GIVEN_LEAF, leaf_id, None).nodes


def _active_path_nodes(session: Session) -> SessionPath:
    """The active path and whether the session is compacted, in one round trip when the
    session records its leaf (every session that has answered once does)."""
    found = _read_path(_SESSION_LEAF, session.pk, session.pk)
    if found.nodes:
        return found
    leaf = latest_leaf(session)  # no recorded leaf (or no messages at all)
    if leaf is None:
        return found
    return _read_path(_GIVEN_LEAF, leaf.pk, session.pk)


def _read_path(leaf: str, leaf_param: int, compaction_of: int | None) -> SessionPath:
    compacted_column = _COMPACTED if compaction_of is not None else "FALSE"
    params = [leaf_param] + ([compaction_of] if compaction_of is not None else [])
    if connection.vendor == "sqlite":
        return _sqlite_read_path(leaf, compacted_column, params)
    with connection.cursor() as cursor:
        cursor.execute(_PATH_SQL.format(leaf=leaf, columns=f"{_NODE_COLUMNS}, {compacted_column}"), params)
        rows = cursor.fetchall()
    nodes = [PathNode(pk, session_id, uid, parent_id, role, json_value(parts), json_value(metadata), bool(forked)) for pk, session_id, uid, parent_id, role, parts, metadata, forked, _ in rows]
    return SessionPath(nodes, bool(rows and rows[0][-1]))


# SQLite returns JSON columns as text: decoding one aggregated document is several times
# faster than decoding every message's parts on its own.
_SQLITE_PATH_JSON = (
    "SELECT json_group_array(json_array(id, session_id, uid, parent_id, role, json(parts), json(metadata), forked)), {compacted} "
    "FROM (" + _PATH_SQL.format(leaf="{leaf}", columns=_NODE_COLUMNS + " AS forked") + ")"
)


def _sqlite_read_path(leaf: str, compacted_column: str, params: list[int]) -> SessionPath:
    with connection.cursor() as cursor:
        # The compaction check's parameter comes first in the statement, the leaf's second.
        cursor.execute(_SQLITE_PATH_JSON.format(leaf=leaf, compacted=compacted_column), params[1:] + params[:1])
        document, compacted = cursor.fetchone()
    return SessionPath([PathNode(*row[:7], bool(row[7])) for row in json.loads(document)], bool(compacted))


def path_to(leaf_id: int | None) -> list[Message]:
    """The same path as model instances, for the (rare) writes that walk it."""
    if leaf_id is None:
        return []
    return list(Message.objects.raw(_PATH_SQL.format(leaf=_GIVEN_LEAF, columns="m.*"), [leaf_id]))


# Read whenever a session records no leaf, i.e. by every new chat's first transcript read
# (building the queryset cost ~0.6 ms, several times the query).
_LATEST_LEAF = CompiledQuery(lambda pk: Message.objects.filter(session_id=pk, children__isnull=True).order_by("-id")[:1])


def latest_leaf(session: Session) -> Message | None:
    """The newest message without children: the default leaf when none is recorded."""
    return _LATEST_LEAF.instance(session.pk)


@dataclass(slots=True)
class StoredMessage:
    """A stored message as admission reads every one of a session's: its columns, with no
    model instance built per message (admitting a turn of a 200-message conversation:
    3.8 → 2.1 ms, inside the admission's write transaction)."""

    pk: int
    uid: str
    parent_id: int | None
    role: str
    parts: Any
    metadata: Any

    def as_ui_message(self) -> UIMessage:
        return _ui_message(self.uid, self.role, self.parts, self.metadata)


# What reconciling and writing read of a stored message.
StoredRow = Message | StoredMessage


def newest_childless(by_pk: dict[int, StoredRow]) -> StoredRow | None:
    """`latest_leaf` over messages already loaded."""
    parents = {m.parent_id for m in by_pk.values()}
    leaves = [pk for pk in by_pk if pk not in parents]
    return by_pk[max(leaves)] if leaves else None


def _active_leaf_id(session: Session) -> int | None:
    # Read the leaf from the database: writers update it with queryset updates, so an
    # in-memory Session may be stale.
    leaf_id = Session.objects.filter(pk=session.pk).values_list("active_leaf_id", flat=True).first()
    if leaf_id is None:
        leaf = latest_leaf(session)
        return leaf.pk if leaf else None
    return leaf_id


def active_path(session: Session) -> list[Message]:
    return path_to(_active_leaf_id(session))


def transcript(session: Session) -> list[UIMessage]:
    """The active path as UIMessages: what get-messages returns and the model sees. A message
    with siblings carries `metadata.branch = {index, count, siblings}` (computed, never stored).
    One round trip for a linear, uncompacted conversation: every turn reads this."""
    path = _active_path_nodes(session)
    messages = with_branch_metadata(path.nodes)
    return compaction_marks(session.pk, messages) if path.compacted else messages


def with_branch_metadata(path: list[PathNode]) -> list[UIMessage]:
    if not path:
        return []
    session_id = path[0].session_id
    on_path_forks = {m.parent_id for m in path if m.forked}
    siblings: dict[int | None, list[str]] = {}
    if on_path_forks:
        fork_filter = Q(parent_id__in=[f for f in on_path_forks if f is not None])
        if None in on_path_forks:
            fork_filter |= Q(parent__isnull=True)
        for parent_id, uid in Message.objects.filter(session_id=session_id).filter(fork_filter).order_by("id").values_list("parent_id", "uid"):
            siblings.setdefault(parent_id, []).append(uid)
    return with_branches(path, siblings)


def with_branches(path: Iterable[PathNode | StoredMessage | Message], siblings: dict[int | None, list[str]]) -> list[UIMessage]:
    """The path as UIMessages, each with `metadata.branch` when `siblings` (uids by parent,
    oldest first) gives it others."""
    messages = []
    for message in path:
        ui = message.as_ui_message()
        group = siblings.get(message.parent_id)
        if group and len(group) > 1:
            ui["metadata"] = {**(ui.get("metadata") or {}), "branch": _branch(group, message.uid)}
        messages.append(ui)
    return messages


def _branch(siblings: list[str], uid: str) -> dict[str, Any]:
    return {"index": siblings.index(uid), "count": len(siblings), "siblings": siblings}


def branch_metadata(session: Session, uid: str) -> dict[str, Any] | None:
    """`metadata.branch` of one message, as a transcript read shows it: None without siblings."""
    found = list(Message.objects.filter(session=session, uid=uid).values_list("parent_id", flat=True)[:1])
    if not found:
        return None
    parent_id = found[0]
    siblings = list(Message.objects.filter(session=session, parent_id=parent_id).order_by("id").values_list("uid", flat=True))
    return _branch(siblings, uid) if len(siblings) > 1 else None


def history(session: Session, leaf_uid: str | None = None) -> list[UIMessage]:
    """The path to `leaf_uid` (any message, e.g. an old branch), or the active path."""
    if leaf_uid is None:
        return transcript(session)
    leaf = session.messages.filter(uid=leaf_uid).first()
    return compaction_marks(session.pk, with_branch_metadata(path_nodes(leaf.pk))) if leaf else []


def children(session: Session, message_uid: str) -> list[UIMessage]:
    """Direct children of a message, oldest first (e.g. the regenerated answers to a question)."""
    return [m.as_ui_message() for m in Message.objects.filter(session=session, parent__uid=message_uid).order_by("id")]


_DESCENDANTS_SQL = """
WITH RECURSIVE subtree(id) AS (
    SELECT id FROM agents_app_message WHERE id = %s
    UNION ALL
    SELECT m.id FROM agents_app_message m JOIN subtree ON m.parent_id = subtree.id
)
SELECT id FROM subtree
"""


def _subtree_ids(message_id: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(_DESCENDANTS_SQL, [message_id])
        return [row[0] for row in cursor.fetchall()]


@transaction.atomic
def switch_branch(session: Session, message_uid: str) -> bool:
    """Make the branch through `message_uid` the conversation: the active leaf becomes the
    newest leaf under it. False for an unknown message."""
    message = session.messages.filter(uid=message_uid).first()
    if message is None:
        return False
    subtree = _subtree_ids(message.pk)
    leaf = Message.objects.filter(id__in=subtree, children__isnull=True).order_by("-id").first()
    Session.objects.filter(pk=session.pk).update(active_leaf=leaf or message)
    return True


@transaction.atomic
def delete_branch(session: Session, message_uid: str) -> bool:
    """Delete a message and everything under it. When the conversation ran through it, the
    conversation moves to the newest remaining branch under its parent."""
    message = session.messages.filter(uid=message_uid).first()
    if message is None:
        return False
    subtree = set(_subtree_ids(message.pk))
    leaf_id = Session.objects.filter(pk=session.pk).values_list("active_leaf_id", flat=True).first()
    parent_id = message.parent_id
    Message.objects.filter(id__in=subtree).delete()
    if leaf_id in subtree:
        replacement = None
        if parent_id is not None:
            remaining = _subtree_ids(parent_id)
            replacement = Message.objects.filter(id__in=remaining, children__isnull=True).order_by("-id").first()
        Session.objects.filter(pk=session.pk).update(active_leaf=replacement or latest_leaf(session))
    return True


def last_assistant(messages: list[UIMessage]) -> UIMessage | None:
    """The last assistant message of a conversation: what a continuation extends."""
    return next((m for m in reversed(messages) if m["role"] == "assistant"), None)


def latest_assistant(session: Session) -> UIMessage | None:
    return last_assistant(transcript(session))


def _stored_as(existing: StoredRow, clean: UIMessage) -> bool:
    return existing.parts == clean["parts"] and existing.metadata == clean.get("metadata") and existing.role == clean["role"]


def write_message(session: Session, message: UIMessage, parent_id: int | None, existing: StoredRow | None) -> StoredRow:
    clean = sanitize_for_persistence(message)
    if existing is not None and _stored_as(existing, clean):
        return existing  # every earlier message of the conversation, on every turn: not even sized
    clean = fit_row_size(clean)
    if existing is not None:
        if not _stored_as(existing, clean):
            existing.parts = clean["parts"]
            existing.metadata = clean.get("metadata")
            existing.role = clean["role"]
            row_writes.update(
                Message, {"pk": existing.pk}, parts=existing.parts, metadata=existing.metadata, role=existing.role,
                text_content=searchable_text(existing.parts), updated_at=timezone.now(),
            )
        return existing
    created = Message(
        session=session,
        uid=clean["id"],
        parent_id=parent_id,
        role=clean["role"],
        parts=clean["parts"],
        metadata=clean.get("metadata"),
        text_content=searchable_text(clean["parts"]),
    )
    row_writes.insert(created)
    return created


# The session's leaf and last failure, its row locked until the transaction ends (SQLite's
# write transaction already locks the database).
_LOCKED_LEAF = CompiledQuery(lambda pk: Session.objects.select_for_update().filter(pk=pk).values_list("active_leaf_id", "terminal"))
# A reply and the message it answers, by uid (the same uid twice when it answers none).
_MESSAGES_BY_UID = CompiledQuery(lambda pk, uid, other_uid: Message.objects.filter(session_id=pk, uid__in=[uid, other_uid]))


_COMPUTED_METADATA = frozenset({"branch", "compaction"})


def strip_computed_metadata(message: UIMessage) -> UIMessage:
    """`metadata.branch` and `metadata.compaction` are computed on read; a client echoing
    them back must not store them."""
    metadata = message.get("metadata")
    if isinstance(metadata, dict) and _COMPUTED_METADATA & metadata.keys():
        rest = {k: v for k, v in metadata.items() if k not in _COMPUTED_METADATA}
        message = {**message, "metadata": rest or None}
        if not rest:
            message.pop("metadata")
    return message


@transaction.atomic
def save_message(session: Session, message: UIMessage, *, parent_uid: str | None = None) -> Message:
    """Insert or update one message. New messages hang under `parent_uid` or the active leaf,
    and become the active leaf."""
    session = Session.objects.select_for_update().get(pk=session.pk)
    existing = session.messages.filter(uid=message["id"]).first()
    if existing is not None:
        write_message(session, message, None, existing)
        return existing
    if parent_uid is not None:
        parent = session.messages.filter(uid=parent_uid).first()
    else:
        parent = session.active_leaf or latest_leaf(session)
    written = write_message(session, message, parent.pk if parent is not None else None, None)
    Session.objects.filter(pk=session.pk).update(active_leaf=written)
    return written


@transaction.atomic(savepoint=False)  # inside a caller's transaction (turn_ending) it is part of that
def save_reply(session: Session, message: UIMessage, anchor_uid: str | None, *, clear_terminal: bool = False) -> Message:
    """Persist a turn's reply right after the message it answers (`anchor_uid`, the last
    message when the turn started). Messages that arrived on the active path while the turn
    ran move under the reply, so the conversation reads in the order things happened.
    `clear_terminal`: the turn succeeded, so the session's last failure (if any) is cleared
    in the same write, rather than by a statement of its own on every turn."""
    locked = _LOCKED_LEAF.row(session.pk)
    if locked is None:
        raise Session.DoesNotExist(f"session {session.pk} no longer exists")
    active_leaf_id, terminal = locked
    cleared: dict[str, Any] = {"terminal": None} if clear_terminal and terminal is not None else {}
    found = {m.uid: m for m in _MESSAGES_BY_UID.instances(session.pk, message["id"], anchor_uid or message["id"])}
    existing = found.get(message["id"])
    anchor = found.get(anchor_uid) if anchor_uid else None
    if existing is not None or anchor is None:
        saved = save_message(session, message)
        if cleared:
            row_writes.update(Session, {"pk": session.pk}, **cleared)
        return saved
    reply = write_message(session, message, anchor.pk, None)
    if active_leaf_id == anchor.pk:  # the usual case: nothing arrived while the turn ran
        row_writes.update(Session, {"pk": session.pk}, active_leaf_id=reply.pk, **cleared)
        return reply
    if cleared:
        row_writes.update(Session, {"pk": session.pk}, **cleared)
    path = active_path(session)
    ids = [m.pk for m in path]
    if anchor.pk in ids and ids[-1] != anchor.pk:
        follower = path[ids.index(anchor.pk) + 1]
        Message.objects.filter(pk=follower.pk).update(parent=reply)
    else:
        Session.objects.filter(pk=session.pk).update(active_leaf=reply)
    return reply


def trim_to(session: Session, limit: int | None) -> int:
    """`max_persisted_messages`: delete the oldest messages beyond `limit` (storage only).
    Survivors whose parent is deleted become roots, so no branch is lost with them."""
    if limit is None:
        return 0
    doomed = list(session.messages.order_by("-id").values_list("id", flat=True)[limit:])
    if not doomed:
        return 0
    with transaction.atomic(savepoint=False):
        Message.objects.filter(parent_id__in=doomed).exclude(id__in=doomed).update(parent=None)
        Session.objects.filter(pk=session.pk, active_leaf_id__in=doomed).update(active_leaf=None)
        deleted, _ = Message.objects.filter(id__in=doomed).delete()
    return deleted


def clear_messages(session: Session) -> None:
    with transaction.atomic():
        Session.objects.filter(pk=session.pk).update(active_leaf=None)
        session.messages.all().delete()


@dataclass(frozen=True)
class TreeRow:
    depth: int
    message: Message
    on_active_path: bool


def tree(session: Session) -> list[TreeRow]:
    """Every message of the session in depth-first order (siblings oldest first), for the
    admin. Depth counts the branch points above a message, so a linear chat stays flat."""
    messages = list(Message.objects.filter(session=session).order_by("id"))
    children: dict[int | None, list[Message]] = {}
    for message in messages:
        children.setdefault(message.parent_id, []).append(message)
    active = {node.id for node in path_nodes(_active_leaf_id(session))}
    rows: list[TreeRow] = []
    roots = children.get(None, [])
    stack = [(int(len(roots) > 1), m) for m in reversed(roots)]
    while stack:
        depth, message = stack.pop()
        rows.append(TreeRow(depth, message, message.pk in active))
        kids = children.get(message.pk, [])
        stack.extend((depth + (len(kids) > 1), child) for child in reversed(kids))
    return rows
