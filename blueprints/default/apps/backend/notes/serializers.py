from rest_framework import serializers

from .models import Note


class NoteSerializer(serializers.ModelSerializer):
    text = serializers.CharField(max_length=10_000)

    class Meta:
        model = Note
        fields = ("id", "text")
