"""The event log becomes a table partitioned by month on PostgreSQL (kizuna.events.partitions).

The rows are copied once into the new table, in the migration's transaction: minutes for tens of
millions of events, during which ingestion keeps filling the inbox and only processing waits.
SQLite is left as it is."""

from django.db import migrations


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from kizuna.events import partitions

    with schema_editor.connection.cursor() as cursor:
        partitions.convert(cursor)


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0004_unpartitioned_references"),
        ("scoring", "0006_unpartitioned_references"),
    ]
    # Going back keeps the partitioned table: the application works the same on either.
    operations = [migrations.RunPython(partition, migrations.RunPython.noop)]
