from django.urls import include, path

# The load balancer routes /api/ here without stripping the prefix.
urlpatterns = [
    path("api/", include("notes.urls")),
    path("api/", include("services.urls")),
]
