"""The shared SAM 3 trainer (arrives with its issue): a library plus `python -m trainer`.
It imports nothing from `app/` or `worker/`."""
