"""Admin tools: the conflict log, overrides, entity history and dead letters.

One service per responsibility, each behind three faces: the JSON API under
``/v1/admin`` (``api.py``), the web pages under ``/admin`` (``web.py``) and the
``syncserver admin`` commands (``cli.py``):

* ``conflicts.ConflictAdmin`` - the conflict log, one conflict, overrides;
* ``history.EntityHistoryService`` - an entity's changes, rejections and state;
* ``dead_letters.DeadLetterAdmin`` - rejected changes: list, show, replay, discard;
* ``audit.AuditLog`` - the audit log every action writes to;
* ``server_changes.ServerChanges`` - how an override or a replay is pushed as a server change;
* ``store.AdminBackend`` - the store they work on.
"""

from __future__ import annotations

__all__: list[str] = []
