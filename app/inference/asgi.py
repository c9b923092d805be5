"""ASGI entry point of the inference service (`samtune inference`): settings read from the environment, once."""

from app.inference.service import create_inference_app

app = create_inference_app()
