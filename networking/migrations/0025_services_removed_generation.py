from django.db import migrations, models

# A deleted service row notes its project's next generation, whatever deleted it (the
# dashboard, a script, a process of the previous release during a rolling deploy, plain
# SQL): a worker that knows the project's services as of before then reads them all
# (``lease.claim``). One UPDATE per DELETE statement on PostgreSQL.
POSTGRESQL = [
    """
    CREATE OR REPLACE FUNCTION networking_note_service_removed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE networking_project AS p
        SET services_removed_generation = p.generation + 1
        WHERE p.id IN (SELECT project_id FROM removed);
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER networking_service_removed AFTER DELETE ON networking_service
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION networking_note_service_removed()
    """,
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER IF EXISTS networking_service_removed ON networking_service",
    "DROP FUNCTION IF EXISTS networking_note_service_removed()",
]
SQLITE = [
    """
    CREATE TRIGGER networking_service_removed AFTER DELETE ON networking_service
    BEGIN
        UPDATE networking_project SET services_removed_generation = generation + 1
        WHERE id = OLD.project_id;
    END
    """,
]
SQLITE_REVERSE = ["DROP TRIGGER IF EXISTS networking_service_removed"]


def _execute(schema_editor, by_vendor):
    for statement in by_vendor.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def create_trigger(apps, schema_editor):
    _execute(schema_editor, {"postgresql": POSTGRESQL, "sqlite": SQLITE})


def drop_trigger(apps, schema_editor):
    _execute(schema_editor, {"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE})


class Migration(migrations.Migration):

    dependencies = [
        ('networking', '0024_mutual_tls'),
    ]

    operations = [
        migrations.AddField(
            model_name='project',
            name='services_removed_generation',
            field=models.PositiveBigIntegerField(db_default=0, default=0),
        ),
        migrations.RunPython(create_trigger, drop_trigger),
    ]
