from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents_app", "0010_turn_recovery_data"),
    ]

    operations = [
        migrations.AddField(
            model_name="contextblock",
            name="runtime",
            field=models.BooleanField(default=False, help_text="Added at run time (add_context), not declared in code"),
        ),
        migrations.AddField(
            model_name="contextblock",
            name="description",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="contextblock",
            name="max_tokens",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="contextblock",
            name="readonly",
            field=models.BooleanField(default=False),
        ),
    ]
