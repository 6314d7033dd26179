from django.contrib import admin
from django.urls import include, path

# The load balancer routes /api/ here without stripping the prefix.
urlpatterns = [
    path("api/admin/", admin.site.urls),
    path("api/", include("notes.urls")),
    path("api/", include("services.urls")),
]
