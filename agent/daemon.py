"""The daemon: each source on its own schedule until SIGTERM, a failing run never stopping the others.

Every source runs once at start, then on its schedule (``every 1h`` or a
cron expression, UTC). Runs are serialised (one worker; the store lock also
excludes a concurrent one-shot ``collect``: such a run fails, is logged and is
retried at the next interval). Missed runs collapse into one (coalesce). After
each run the health file is rewritten atomically: per source the last run,
its status and error, and the next run time.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from affidavit.agent.runner import collect, log_signer_loader
from affidavit.config.durations import parse_duration
from affidavit.config.loader import LoadedConfig
from affidavit.config.models import SourceConfig
from affidavit.errors import AffidavitError
from affidavit.signing.keys import Signer
from affidavit.signing.predicate import utc_iso

log = logging.getLogger("affidavit.agent.daemon")


def trigger_for(schedule: str) -> Any:
    """An APScheduler trigger for ``every <duration>`` or a five-field cron expression (UTC)."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    text = schedule.strip()
    if text.startswith("every"):
        return IntervalTrigger(seconds=parse_duration(text.removeprefix("every").strip()).total_seconds(),
                               timezone=UTC)
    return CronTrigger.from_crontab(text, timezone="UTC")


@dataclass
class Health:
    path: Path | None
    started: datetime
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, name: str, **values: Any) -> None:
        with self.lock:
            self.sources.setdefault(name, {}).update(values)
            if self.path is None:
                return
            doc = {"pid": os.getpid(), "started": utc_iso(self.started), "sources": self.sources}
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.path)


class Daemon:
    def __init__(self, loaded: LoadedConfig, signer: Signer, health_file: Path | None,
                 env: Mapping[str, str], clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.blocking import BlockingScheduler

        self.loaded = loaded
        self.signer = signer
        self.clock = clock
        self.log_notes: list[str] = []
        self.log_signer = log_signer_loader(loaded, env, None, self.log_notes)
        self.health = Health(health_file, clock())
        self.scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(1)}, timezone=UTC)
        self.triggers: dict[str, Any] = {}
        for src in loaded.config.sources:
            schedule = src.schedule or loaded.collectors[src.type].default_schedule
            self.triggers[src.name] = trigger_for(schedule)
            self.scheduler.add_job(
                self.run_source, self.triggers[src.name], args=[src], id=src.name, name=src.name,
                coalesce=True, max_instances=1, misfire_grace_time=3600, next_run_time=clock(),
            )
            self.health.record(src.name, schedule=schedule, status="scheduled")

    def run_source(self, src: SourceConfig) -> None:
        started = self.clock()
        try:
            report = collect(self.loaded, self.signer, [src], log_signer=self.log_signer)
            while self.log_notes:
                log.warning("%s", self.log_notes.pop(0))
            result = report.results[0]
            status, error, run_id = result.status, result.error, result.run_id
        except AffidavitError as e:  # the store is busy or unreadable: retry at the next interval
            status, error, run_id = "failed", e.diagnostics(), None
        except Exception as e:  # never let one run take the daemon down
            log.exception("source %s: unexpected error", src.name)
            status, error, run_id = "failed", f"{type(e).__name__}: {e}", None
        if status == "failed":
            log.error("source %s failed: %s", src.name, error)
        else:
            log.info("source %s: %s (run %s)", src.name, status, run_id)
        # from the trigger, not scheduler.get_job(): that takes the job-store lock, which
        # shutdown(wait=True) holds while it waits for this very job (a deadlock on SIGTERM)
        nxt = self.triggers[src.name].get_next_fire_time(None, self.clock())
        self.health.record(src.name, last_run=utc_iso(started), status=status, error=error, run_id=run_id,
                           next_run=utc_iso(nxt) if nxt else None)

    def run(self) -> None:
        """Block until SIGTERM or SIGINT, then finish the running job and return.

        The handler only starts a thread that shuts the scheduler down: shutting
        down inside the handler would wait for the running job while holding the
        scheduler's locks that job needs (a deadlock).
        """
        stopper: list[threading.Thread] = []

        def stop(signum: int, frame: FrameType | None) -> None:
            if stopper:
                return
            log.info("signal %d: stopping after the running job", signum)
            t = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, name="affidavit-stop")
            stopper.append(t)
            t.start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("daemon started with %d source(s)", len(self.loaded.config.sources))
        self.scheduler.start()
        for t in stopper:  # the running collection has finished once shutdown returns
            t.join()
