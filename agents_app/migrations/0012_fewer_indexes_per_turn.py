"""Indexes every turn wrote and no query needed: a message's and a turn's own `session_id`
index (`uniq_message_uid`, `message_children_idx`, `uniq_turn_request` and `turn_status_idx`
all start with that column), a second index on a message's `parent_id` (`message_parent_idx`
is the one kept), and the turn's `recovery_root` index (read only with the session's id).

The indexes are dropped by name, not by altering the fields: on SQLite altering a field
rebuilds its table, which would drop the full-text search triggers on messages.
"""
from typing import Any

import django.db.models.deletion
from django.db import migrations, models

# (table, column, index): the names Django gave them.
DROPPED = (
    ("agents_app_message", "session_id", "agents_app_message_session_id_dbf8d761"),
    ("agents_app_message", "parent_id", "agents_app_message_parent_id_a941c639"),
    ("agents_app_turn", "session_id", "agents_app_turn_session_id_fcae6edc"),
    ("agents_app_turn", "recovery_root", "agents_app_turn_recovery_root_5ccecb3d"),
)
# PostgreSQL's second index on an indexed varchar column, for LIKE.
DROPPED_LIKE = ("agents_app_turn", "recovery_root", "agents_app_turn_recovery_root_5ccecb3d_like")


def drop(apps: Any, schema_editor: Any) -> None:
    for _, _, index in (*DROPPED, DROPPED_LIKE):
        schema_editor.execute(f'DROP INDEX IF EXISTS "{index}"')


def restore(apps: Any, schema_editor: Any) -> None:
    for table, column, index in DROPPED:
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" ("{column}")')
    if schema_editor.connection.vendor == "postgresql":
        table, column, index = DROPPED_LIKE
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS "{index}" ON "{table}" ("{column}" varchar_pattern_ops)')


class Migration(migrations.Migration):

    dependencies = [
        ("agents_app", "0011_context_block_runtime"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="parent",
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="children", to="agents_app.message"),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="session",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="messages", to="agents_app.session"),
                ),
                migrations.AlterField(
                    model_name="turn",
                    name="recovery_root",
                    field=models.CharField(blank=True, max_length=64),
                ),
                migrations.AlterField(
                    model_name="turn",
                    name="session",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="turns", to="agents_app.session"),
                ),
            ],
            database_operations=[migrations.RunPython(drop, restore)],
        ),
    ]
