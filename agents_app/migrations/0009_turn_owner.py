from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents_app", "0008_chat_page"),
    ]

    operations = [
        migrations.AddField(
            model_name="turn",
            name="owner",
            field=models.CharField(blank=True, max_length=128, null=True),
        ),
    ]
