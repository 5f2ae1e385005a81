"""API tokens move here from the networking app (networking/0020): the model is recorded
against the table that already exists, networking_apitoken; the database is not touched."""

import django.db.models.deletion
import django.db.models.functions.comparison
import django.db.models.functions.text
import networking.plain_text
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('api', '0001_initial'),
        ('networking', '0020_tokens_move_to_the_api'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='ApiToken',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=50, validators=[networking.plain_text.PrintableText()])),
                        ('role', models.CharField(choices=[('owner', 'Owner'), ('member', 'Member'), ('viewer', 'Viewer'), ('support', 'Support staff')], max_length=20)),
                        ('prefix', models.CharField(max_length=16, unique=True)),
                        ('digest', models.CharField(max_length=64)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('expires_at', models.DateTimeField(blank=True, null=True)),
                        ('last_used_at', models.DateTimeField(blank=True, null=True)),
                        ('revoked_at', models.DateTimeField(blank=True, null=True)),
                        ('organization', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to='networking.organization')),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'networking_apitoken',
                        'ordering': ['-created_at', '-id'],
                        'constraints': [models.UniqueConstraint(models.F('user'), django.db.models.functions.comparison.Coalesce(models.F('organization'), models.Value(0)), django.db.models.functions.text.Lower('name'), condition=models.Q(('revoked_at__isnull', True)), name='one_live_token_name_per_user_and_org')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
