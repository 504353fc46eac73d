"""Fast inserts of many new rows: COPY on PostgreSQL, bulk_create elsewhere.

Django's bulk_create spends most of its time building and quoting one big INSERT (with
client-side parameter binding every value is quoted in Python). COPY streams the rows in
PostgreSQL's own format through psycopg's C adapters: the journey engine writes its step log,
outbox messages and audit entries this way. Primary keys are not returned; callers that need
them read them back by a unique column."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, models


def insert(objs: Sequence[models.Model], batch_size: int = 1000) -> None:
    """Inserts unsaved instances of one model (their pk is left unset on PostgreSQL). A unique
    violation raises, as the INSERT would."""
    if not objs:
        return
    model = type(objs[0])
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objs, batch_size=batch_size)
        return
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    for obj in objs:
        for f in fields:  # what Model.save() does before writing (auto_now and the like)
            if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
                f.pre_save(obj, add=True)
    # Plain values (numbers, text, times, ids) go to psycopg as they are; fields that encode
    # (JSON and the like) through Django's own preparation.
    plain = {"AutoField", "BigAutoField", "BigIntegerField", "BooleanField", "CharField", "DateTimeField",
             "ForeignKey", "IntegerField", "PositiveIntegerField", "PositiveSmallIntegerField", "SlugField",
             "SmallIntegerField", "TextField", "EmailField"}
    getters = [(f.attname, None if f.get_internal_type() in plain else f) for f in fields]
    rows = ([getattr(obj, name) if field is None else field.get_db_prep_save(getattr(obj, name), connection)
             for name, field in getters] for obj in objs)
    insert_rows(model, [f.attname for f in fields], rows)


def insert_rows(model: type[models.Model], names: Sequence[str], rows) -> None:
    """COPY of plain value tuples (in the order of `names`, field attnames) into the model's
    table; PostgreSQL only. The values must be what the column takes (JSON as text)."""
    by_name = {f.attname: f for f in model._meta.concrete_fields}
    columns = ", ".join(connection.ops.quote_name(by_name[n].column) for n in names)
    table = connection.ops.quote_name(model._meta.db_table)
    connection.ensure_connection()
    with connection.cursor() as cur, cur.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
