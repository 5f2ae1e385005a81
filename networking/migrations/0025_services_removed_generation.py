from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('networking', '0024_mutual_tls'),
    ]

    operations = [
        migrations.AddField(
            model_name='project',
            name='services_removed_generation',
            field=models.PositiveBigIntegerField(default=0),
        ),
    ]
