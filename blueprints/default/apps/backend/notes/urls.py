from django.urls import path

from . import views

urlpatterns = [
    path("notes/", views.NoteList.as_view()),
    path("notes/<int:pk>/", views.NoteDetail.as_view()),
    path("health/", views.health),
    path("version/", views.version),
]
