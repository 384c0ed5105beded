"""Views and routes of the Django tests that go through Django's whole request handler."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views import View

from ratelimit.django import limit


@limit("3/minute")
def sync_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"view": "sync"})


@limit("3/minute")
async def async_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"view": "async"})


@limit("2/minute")
class Items(View):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        return JsonResponse({"item": pk})

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        return JsonResponse({"created": pk})


@limit("2/minute")
class AsyncItems(View):
    async def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        return JsonResponse({"item": pk})


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain")


urlpatterns = [
    path("sync", sync_view),
    path("async", async_view),
    path("items/<int:pk>", Items.as_view()),
    path("async-items/<int:pk>", AsyncItems.as_view()),
    path("plain", plain),
    path("health", plain),
]
