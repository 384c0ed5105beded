import views
from django.urls import include, path
from rest_framework.routers import SimpleRouter

router = SimpleRouter()
router.register("uploads", views.UploadViewSet, basename="upload")

urlpatterns = [
    path("login", views.login),
    path("search", views.search),
    path("items/<int:pk>", views.ItemView.as_view()),
    path("health", views.health),
    path("api/ours", views.OursView.as_view()),
    path("api/drf", views.DRFView.as_view()),
    path("api/", include(router.urls)),
]
