from django.urls import path

from . import views

urlpatterns = [
    path("cached/<str:key>/", views.cached),
    path("tasks/", views.task_create),
    path("tasks/<uuid:task_id>/", views.task_detail),
    path("media/", views.media_upload),
]
