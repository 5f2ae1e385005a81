"""The content type of API tokens follows the model to the api app (tokens moved in 0002), so
nothing is left naming ``networking.apitoken``."""

from django.db import migrations


def follow(apps, schema_editor, source="networking", target="api"):
    content_type = apps.get_model("contenttypes", "ContentType")
    moving = content_type.objects.filter(app_label=source, model="apitoken")
    if content_type.objects.filter(app_label=target, model="apitoken").exists():
        moving.delete()  # its permissions go with it; the other one stays
    else:
        moving.update(app_label=target)


def back(apps, schema_editor):
    follow(apps, schema_editor, source="api", target="networking")


class Migration(migrations.Migration):

    dependencies = [
        ("api", "0002_tokens_move_to_the_api"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(follow, back)]
