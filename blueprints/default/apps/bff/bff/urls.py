from django.urls import path

from . import views

# The load balancer routes /bff/ here without stripping the prefix.
urlpatterns = [
    path("bff/feed/", views.feed),
    path("bff/health/", views.health),
]
