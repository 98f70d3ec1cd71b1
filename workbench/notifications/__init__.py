"""Notifications (issue 16): who is told what when a stage breaks, fails, is fixed,
passes or waits for someone, a run is rolled back or a pipeline paused.

``config`` parses the ``notifications:`` section; ``feed`` reads events back from
the store and queues them in the ``outbox`` (once per event, source row,
recipient and channel); ``sender`` claims due rows one at a time and delivers
them over ``deliver`` (SMTP, Slack/Mattermost, Teams, signed JSON), retrying
with backoff. ``hook`` runs the sender in ``serve``, ``server`` and ``tick``.
docs/notifications.md is the user's guide.
"""
from __future__ import annotations

from . import config as _config  # noqa: F401 - registers the notifications: section and its checks
from . import outbox as _outbox  # noqa: F401 - the outbox table, its migration and frame
from . import hook as _hook  # noqa: F401 - the sender in serve, server and tick
