from django.contrib.auth import views as auth_views
from django.urls import path

from agents_app.ui import views

urlpatterns = [
    path("", views.home, name="chat-home"),
    path("login/", auth_views.LoginView.as_view(template_name="registration/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("chat/new/", views.new_chat, name="chat-new"),
    path("chat/<str:agent>/<str:name>/", views.chat_page, name="chat-page"),
]
