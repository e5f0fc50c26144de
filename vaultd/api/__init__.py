"""The REST endpoints under ``/api/`` and their OpenAPI document."""
