"""Sending work to the Celery workers. Messages carry ids only and are sent after the commit that made
the row they name, so a worker never looks for a row that is not there yet."""

from __future__ import annotations

from typing import Protocol

from celery import Celery
from sqlalchemy.orm import Session

from app.core.db import after_commit
from app.core.tasks import queue_for


class TaskQueue(Protocol):
    def send(self, task: str, args: list[str], queue: str) -> None: ...


class CeleryQueue:
    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def send(self, task: str, args: list[str], queue: str) -> None:
        self.celery.send_task(task, args=args, queue=queue)


def enqueue_after_commit(session: Session, tasks: TaskQueue, task: str, args: list[str]) -> None:
    """Send `task` to its queue (app/core/tasks.py) once this transaction commits; nothing if it rolls back."""
    queue = queue_for(task)
    after_commit(session, lambda: tasks.send(task, args, queue))
