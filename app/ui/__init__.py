"""The web UI: server-rendered pages whose scripts talk to the REST API with the session cookie."""
