"""The login view, throttled: after `AGENTS_MAX_LOGIN_FAILURES` failed attempts for one
user name from one address, further attempts are refused for the rest of the window."""
from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse

from agents_app import limits


def _address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


class ThrottledLoginView(auth_views.LoginView):
    template_name = "registration/login.html"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = str(request.POST.get("username", ""))
        if limits.login_blocked(username, _address(request)):
            return HttpResponse("Too many failed logins: try again in a few minutes.", status=429, content_type="text/plain")
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        limits.record_login_failure(str(self.request.POST.get("username", "")), _address(self.request))
        return super().form_invalid(form)
