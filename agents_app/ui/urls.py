from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from agents_app.ui import views
from agents_app.ui.login import ThrottledLoginView

urlpatterns = [
    path("", views.home, name="chat-home"),
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("chat/new/", views.new_chat, name="chat-new"),
    path("chat/search/", views.search, name="chat-search"),
    path("chat/<str:agent>/<str:name>/", views.chat_page, name="chat-page"),
    path("chat/<str:agent>/<str:name>/rename/", views.rename, name="chat-rename"),
    path("chat/<str:agent>/<str:name>/delete/", views.delete, name="chat-delete"),
    path("chat/<str:agent>/<str:name>/clear/", views.clear, name="chat-clear"),
    path("chat/<str:agent>/<str:name>/memory/", views.memory_panel, name="chat-memory"),
    path("chat/<str:agent>/<str:name>/memory/<str:label>/", views.memory_save, name="chat-memory-save"),
    re_path(r"^chat/(?P<agent>[^/]+)/(?P<name>[^/]+)/export\.(?P<fmt>md|json)$", views.export_conversation, name="chat-export"),
]
