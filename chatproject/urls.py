from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("agents/", include("agents_app.transport.urls")),
    path("", include("agents_app.ui.urls")),
]
