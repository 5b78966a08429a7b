"""The lock under which a promotion reads, compares and moves the champion alias, chosen in one place.

- A local sqlite store: the file lock beside it (digitpipe.locks); every process that can write the store sees it.
- A remote MLflow store: a Prefect global concurrency limit of one slot, on the Prefect server every worker talks
  to, held as a lease. A holder that dies frees the slot when its lease lapses; a holder whose lease lapsed is
  stopped before it moves an alias (`PromotionLock.check`, run by the Registry before every alias move).
- A remote store and no Prefect server: no lock every worker sees, so promotion refuses, unless the user accepted
  promotions that may interleave (--unlocked-promotion).

Prefect is imported only when a Prefect lock is taken: `digitpipe promote` on a sqlite store loads none of it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from digitpipe import locks
from digitpipe.config import TrackingConfig
from digitpipe.errors import PromotionRefused, UserError

log = logging.getLogger("digitpipe")
Mode = Literal["prefect", "refuse", "unlocked"]
LEASE_SECONDS = 60.0  # Prefect's shortest lease: a dead holder's slot frees after it (and the repossessor's 15 s loop)
WAIT_SECONDS = 900.0  # a promotion waits this long for the lock before it gives up
_lease: ContextVar[UUID | None] = ContextVar("digitpipe_promotion_lease", default=None)


class LeaseLost(PromotionRefused):
    """The Prefect server no longer counts this holder's slot: another worker may hold the lock now."""


def lock_mode(unlocked: bool) -> Mode:
    """What locks a remote store's promotions, decided at the entry point before any temporary Prefect API starts
    (one that only this process sees locks nothing): the configured Prefect server's concurrency limit, else none,
    which refuses unless the user passed `unlocked`."""
    from flows.startup import configured_api_url

    if configured_api_url():
        return "prefect"
    return "unlocked" if unlocked else "refuse"


@dataclass(frozen=True)  # equal by value: tracker_for keeps one Tracker per store and lock
class PromotionLock:
    """The promotion lock of `tracking`'s registry, for `Tracker(cfg, promotion_lock=...)`: the file lock for a
    local sqlite store whatever `mode`, else what `mode` says (see `lock_mode`)."""

    tracking: TrackingConfig
    mode: Mode

    @property
    def name(self) -> str:
        """The Prefect global concurrency limit that serializes this registered model's promotions."""
        return f"digitpipe-promotion-{self.tracking.registered_model}"

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        uri = self.tracking.tracking_uri
        if self.tracking.local_store:
            held = locks.local_promotion_lock(uri)
        elif self.mode == "prefect":
            held = _prefect_slot(self.name)
        elif self.mode == "unlocked":
            held = contextlib.nullcontext()
        else:
            raise PromotionRefused(f"no promotion lock: the MLflow store at {uri} is remote and no Prefect server is "
                                   "configured (PREFECT_API_URL) to serialize promotions; configure one, or pass "
                                   "--unlocked-promotion to accept promotions that may interleave")
        with held:
            yield

    def check(self) -> None:
        """Before an alias moves: a Prefect holder proves its lease is still on the server, renewing it (a lapsed
        lease answers 410 Gone once the server's repossessor has freed the slot for others)."""
        if self.tracking.local_store or self.mode != "prefect":
            return
        lease = _lease.get()
        if lease is None:
            raise LeaseLost(f"an alias moved outside the promotion lock {self.name}")
        import httpx
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(lease, LEASE_SECONDS)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 410:
                raise
            raise LeaseLost(f"the lease on the promotion lock {self.name} lapsed before an alias moved: "
                            "stopped; another worker may have promoted since") from None


@contextlib.contextmanager
def _prefect_slot(name: str, promotion: bool = True) -> Iterator[None]:
    """The one slot of the limit `name` (created if missing), acquired strictly and held as a lease that a
    background thread renews; a promotion's context keeps the lease id for `PromotionLock.check` and gives up
    after WAIT_SECONDS, a training's waits as long as the training it waits for takes."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        _ensure_one_slot_limit(client, name)
        lease = _acquire(client, name, WAIT_SECONDS if promotion else None)
        stop = threading.Event()
        # in the holder's context: its Prefect settings (a caller's temporary_settings) reach the renewals too
        renewer = threading.Thread(target=contextvars.copy_context().run, args=(_renew_until, lease, stop),
                                   daemon=True, name=f"{name}-lease")
        renewer.start()
        token = _lease.set(lease) if promotion else None
        try:
            yield
        finally:
            if token is not None:
                _lease.reset(token)
            stop.set()
            renewer.join()
            client.release_concurrency_slots_with_lease(lease)


@contextlib.contextmanager
def training_locks(tracking: TrackingConfig, mode: Mode, keys: list[str]) -> Iterator[None]:
    """One lock per training key (taken in order, so that two runs never wait on each other), under which a run
    trains and judges: a second run of the same training waits for the first's verdict, then finds it. A local
    sqlite store's are files beside it; a remote store's, Prefect concurrency limits `digitpipe-train-KEY`; with
    no Prefect server there is none (identical runs may then both train; the promotion lock still orders them)."""
    with contextlib.ExitStack() as held:
        for key in sorted(set(keys)):
            if tracking.local_store:
                held.enter_context(locks.local_training_lock(tracking.tracking_uri, key))
            elif mode == "prefect":
                held.enter_context(_prefect_slot(f"digitpipe-train-{key}", promotion=False))
        yield


def _ensure_one_slot_limit(client, name: str) -> None:
    """Create the limit if missing. An inactive limit, or one of several slots, would let promotions overlap
    silently (Prefect grants a lease on an inactive limit without taking a slot): refuse those."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        with contextlib.suppress(ObjectAlreadyExists):  # another worker created it in between
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        limit = client.read_global_concurrency_limit_by_name(name)
    if limit.limit != 1 or not limit.active:
        raise UserError(f"the Prefect concurrency limit {name} is a lock only when active with one slot "
                        f"(it has {limit.limit}, active={limit.active}): `prefect gcl update {name} --limit 1 --enable`")


def _acquire(client, name: str, wait_seconds: float | None) -> UUID:
    """A lease on the limit's slot, waiting while another holder has it (the server answers 423 Locked), at most
    `wait_seconds` (None: as long as it takes)."""
    import httpx
    from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse

    deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
    said = False
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            if deadline is not None and time.monotonic() > deadline:
                raise UserError(f"the lock {name} was held by others for over {wait_seconds:.0f} s") from None
            if not said:  # say why the command stops here
                log.warning("waiting for the Prefect concurrency limit %s: another run holds it", name)
                said = True
            time.sleep(min(float(exc.response.headers.get("Retry-After", 1)), 2.0))
            continue
        granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
        if not granted.limits:  # strict: a lease on no limit is no lock (the limit was deleted meanwhile)
            client.release_concurrency_slots_with_lease(granted.lease_id)
            raise UserError(f"the Prefect concurrency limit {name} vanished while promotion took it")
        return granted.lease_id


def _renew_until(lease: UUID, stop: threading.Event) -> None:
    """Keep the lease alive while its holder works (four tries per lease); a failed renewal is not fatal here:
    `PromotionLock.check` finds a lapsed lease before any alias moves."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        while not stop.wait(LEASE_SECONDS / 4):
            with contextlib.suppress(Exception):
                client.renew_concurrency_lease(lease, LEASE_SECONDS)
