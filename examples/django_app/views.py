"""Views of the example: a function view, an async view, a class-based view, a DRF viewset
on our throttle, and DRF's own UserRateThrottle for comparison."""

import asyncio

from django.http import HttpResponse, JsonResponse
from django.views import View
from rest_framework import viewsets
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from ratelimit.django import Throttle, limit


@limit("5/minute")  # per client IP; this view counts on its own
def login(request):
    return JsonResponse({"ok": True})


@limit("20/minute")
async def search(request):  # awaited on the event loop under ASGI
    await asyncio.sleep(0)
    return JsonResponse({"q": request.GET.get("q", "")})


@limit("30/minute")  # every method of the class shares one count
class ItemView(View):
    def get(self, request, pk):
        return JsonResponse({"item": pk})


def health(request):  # RATELIMIT["EXEMPT"] keeps the middleware off it
    return HttpResponse("ok")


class UploadViewSet(viewsets.ViewSet):
    throttle_scope = "uploads"  # list and retrieve share the scope's limit

    def list(self, request):
        return Response({"uploads": []})

    def retrieve(self, request, pk=None):
        return Response({"upload": pk})


class OursView(APIView):  # 5/minute through ratelimit.django.Throttle
    throttle_classes = (Throttle,)
    throttle_scope = "five"

    def get(self, request):
        return Response({"ok": True})


class DRFView(APIView):  # 5/minute through DRF's UserRateThrottle, on Django's cache
    throttle_classes = (UserRateThrottle,)

    def get(self, request):
        return Response({"ok": True})
