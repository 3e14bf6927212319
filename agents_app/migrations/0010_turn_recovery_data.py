from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents_app", "0009_turn_owner"),
    ]

    operations = [
        migrations.AddField(
            model_name="turn",
            name="recovery_data",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
