"""The API's inference tier: the services SAMTUNE_INFERENCE_URLS lists, else this process itself."""

from __future__ import annotations

from app.core.storage import ObjectStorage
from app.inference.local import LocalInference
from app.inference.remote import RemoteInference
from app.settings import Settings


def make_inference(settings: Settings, storage: ObjectStorage) -> LocalInference | RemoteInference:
    if settings.inference_urls_list:
        return RemoteInference(settings)
    return LocalInference(settings, storage)
