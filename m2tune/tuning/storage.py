"""Where studies live: an Optuna RDB storage (SQLite by default, PostgreSQL across hosts).

Trials that were running when their process died (killed run, lost host) would stay RUNNING
forever. Every running trial therefore sends a heartbeat; a trial whose heartbeat is older
than the grace period is failed by the next run that opens the study, and its parameters are
enqueued again once (Optuna's RetryHeartbeatStaleTrialCallback), so a resumed run loses no candidate.
Completed trials are written when told, so a resumed run repeats none.
"""
from __future__ import annotations

import contextlib
import random
import threading
import time
import warnings
from typing import Any, Iterator, Optional

DEFAULT_URL = "sqlite:///m2tune.db"
HEARTBEAT_S = 10
GRACE_S = 60
SCHEMA_ATTEMPTS = 5


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Optuna's notes that its heartbeat and retry helpers are experimental or meant for
    Study.optimize: m2tune drives ask/tell itself and records the heartbeats (Heartbeat below)."""
    import optuna
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


class StorageError(ValueError):
    """A storage URL that cannot be opened: the message says which and why, in one line."""


def normalise_url(url: str) -> str:
    """`postgresql://...` with the driver this environment has: SQLAlchemy 2.1 maps a bare
    postgresql:// to psycopg 3, the test extra installs psycopg2 (either works when named)."""
    import importlib.util
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(bare):]
            return "postgresql://" + url[len(bare):]
    return url


def sqlite_path(url: str) -> Optional[str]:
    """The file of a sqlite:/// URL (None for other storages or an in-memory SQLite)."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix):].split("?", 1)[0]
            return path if path and path != ":memory:" else None
    return None


def open_storage(url: str = DEFAULT_URL, *, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S,
                 create: bool = True) -> Any:
    """The Optuna storage at `url`; StorageError (one line) when it cannot be opened.

    create=False (read-only commands: export, report): a SQLite file that does not exist is an
    error, not a new empty database.
    """
    import os

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    if url in (":memory:", "memory"):
        return optuna.storages.InMemoryStorage()
    if "://" not in url:
        raise StorageError(f"--storage {url!r} is not a URL: give sqlite:///PATH (a file) or "
                           "postgresql://user@host/db")
    url = normalise_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not os.path.isfile(path):
            raise StorageError(f"no study storage at {path} (sqlite file not found)")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StorageError(f"cannot create {path}: the folder {folder} does not exist")
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # several GPU threads and processes write one file: wait for the lock instead of failing
        engine["connect_args"] = {"timeout": 60}
    else:
        engine["pool_pre_ping"] = True      # a database restart must not kill a long tuning run
    import sqlalchemy.exc
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # hosts started together on a fresh database all create Optuna's tables; on PostgreSQL
            # the losers fail ("type studydirection already exists") and find the tables on a retry
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.5 + random.random())
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(f"cannot open storage {redacted(url)}: {_first_line(exc)}") from None
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def redacted(url: str) -> str:
    """The storage URL without its password (a PostgreSQL URL may carry one)."""
    import re
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:               # not an RDB URL (":memory:") or no SQLAlchemy: hide by pattern
        return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


class Heartbeat:
    """Records a running trial's heartbeat every interval until stopped (no-op without support)."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._stop = threading.Event()
        interval: Optional[int] = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self._thread = None
        if interval:
            storage.record_heartbeat(trial_id)
            self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True)
            self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:       # a lost connection is retried at the next beat
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "Heartbeat":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
