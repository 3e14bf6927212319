from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from agents_app.ui import memory, views
from agents_app.ui.login import ThrottledLoginView

urlpatterns = [
    path("", views.home, name="chat-home"),
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("chat/send/", views.send, name="chat-send"),
    path("chat/import/", views.import_conversation, name="chat-import"),
    path("chat/files/<str:key>/", views.attachment, name="chat-attachment"),
    path("chat/search/", views.search, name="chat-search"),
    path("chat/<str:agent>/<str:name>/", views.chat_page, name="chat-page"),
    path("chat/<str:agent>/<str:name>/rename/", views.rename, name="chat-rename"),
    path("chat/<str:agent>/<str:name>/delete/", views.delete, name="chat-delete"),
    path("chat/<str:agent>/<str:name>/clear/", views.clear, name="chat-clear"),
    path("chat/<str:agent>/<str:name>/queue/<int:queued_id>/<str:change>/", views.queued_message, name="chat-queued"),
    path("chat/<str:agent>/<str:name>/approvals/", views.approvals_panel, name="chat-approvals"),
    path("chat/<str:agent>/<str:name>/approvals/<str:scope>/<str:tool>/revoke/", views.revoke_approval, name="chat-revoke"),
    path("chat/<str:agent>/<str:name>/memory/", memory.memory_panel, name="chat-memory"),
    path("chat/<str:agent>/<str:name>/memory/<str:label>/", memory.memory_change, name="chat-memory-save"),
    path("chat/<str:agent>/<str:name>/memory/<str:label>/<str:change>/", memory.memory_change, name="chat-memory-change"),
    re_path(r"^chat/(?P<agent>[^/]+)/(?P<name>[^/]+)/export\.(?P<fmt>md|json)$", views.export_conversation, name="chat-export"),
]
