"""Room on every page of the score table (PostgreSQL), so that re-scoring's updates of fit, grade
and engagement stay on the same page (HOT updates) and skip the three indexes."""

from django.db import migrations


def set_fillfactor(apps, schema_editor, value: int = 70):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE scoring_contactscore SET (fillfactor = {value})")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE scoring_contactscore RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("scoring", "0003_rescore_run")]
    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
