"""API tokens move to the api app (api/0002): only Django's record of the model moves; the
table, networking_apitoken, stays as it is."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('networking', '0019_connection_tests'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(
                    model_name='apitoken',
                    name='one_live_token_name_per_user_and_org',
                ),
                migrations.DeleteModel(
                    name='ApiToken',
                ),
            ],
            database_operations=[],
        ),
    ]
