"""The inference tier: where models are loaded and predictions computed.

`samtune inference` runs it as a service of its own (app/inference/service.py), owning one device; the API
forwards predictions to it (remote.py), or, with no service configured, predicts in its own process with the
same code (local.py). calls.py is what travels between the two."""
