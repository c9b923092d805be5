"""ASGI entry point for uvicorn (`app.asgi:app`): settings are read from the environment here, once."""

from app.main import create_app

app = create_app()
