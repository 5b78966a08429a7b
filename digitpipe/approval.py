"""Approval by a person (promotion.approval: required): a version that earned promotion waits as
`awaiting_approval`; a person approves it (it becomes the champion, if the champion is still the one it beat) or
rejects it; left waiting past approval_timeout_hours, it is `not_approved`. Each decision is recorded on the
version: approved_by, approved_at, approval_comment."""

from __future__ import annotations

import calendar
import logging
import time

from digitpipe import interrupts
from digitpipe.errors import UserError
from digitpipe.files import first_line
from digitpipe.promotion import move_champion, record_verdict, user
from digitpipe.records.models import VersionRecord
from digitpipe.records.verdicts import Verdict, VerdictKind, approval_tags, from_tags
from digitpipe.tracking import Champion, Registry

log = logging.getLogger("digitpipe")


def decide(registry: Registry, version: str, comment: str, approve: bool = True, who: str | None = None) -> Verdict:
    """A person's decision on a waiting version (made by `who`, else `user()`), under the promotion lock: the
    version's verdict and the champion read again there, so that of two decisions at once one decides and the
    other is told it came too late. An approval after the timeout, or after the champion the gate judged against
    moved, is refused and the version becomes not_approved (so that the next run trains and judges it again)."""
    if not comment.strip():
        raise UserError("--comment: say why (it is recorded on the version)")
    registry.version_tags(version)  # a clear error for a version that does not exist
    with registry.promotion_lock():
        waited = from_tags(version, registry.version_tags(version))
        if waited is None:
            raise UserError(f"v{version} is not awaiting approval: the gate has not judged it")
        if waited.kind is not VerdictKind.AWAITING_APPROVAL:
            raise UserError(f"v{version} is not awaiting approval: it was decided already "
                            f"({waited.kind.value}: {first_line(waited.said, 120)})")
        champion = registry.champion()
        interrupts.pause_at("approval")
        with interrupts.deferred():  # the alias, the decision's tags and the verdict: all or none
            verdict = (approve and _too_late(registry, waited, champion)) or _decided(
                registry, waited, champion, comment, approve, who or user())
            record_verdict(registry, verdict)  # last: while the verdict still says awaiting, a retry completes this
    _follow(registry, verdict)
    if verdict.kind is VerdictKind.NOT_APPROVED:
        raise UserError(f"v{version} not approved: {verdict.reason}")
    return verdict


def _too_late(registry: Registry, waited: Verdict, champion: Champion | None) -> Verdict | None:
    """not_approved where the wait ran out, or where the champion is no longer the one the gate judged against."""
    hours = registry.cfg.promotion.approval_timeout_hours
    if _waited_too_long(waited, hours):
        return _timed_out(waited.version, hours)
    judged, now = waited.champion_version, champion and champion.version
    if now in (judged, waited.version):  # a retry after the alias moved and before the verdict was recorded
        return None
    return Verdict(waited.version, VerdictKind.NOT_APPROVED, f"judged against champion "
                   f"{'v' + judged if judged else 'none'}, but the champion is now {'v' + now if now else 'none'} "
                   "(the next run trains it again and judges it against the new champion)", champion_version=judged)


def _decided(registry: Registry, waited: Verdict, champion: Champion | None, comment: str, approve: bool,
             who: str) -> Verdict:
    """The person's decision: the alias moved where approved, who, when and why on the version."""
    version = waited.version
    if approve and not (champion and champion.version == version):
        move_champion(registry, version, champion)
    registry.set_version_tags(version, approval_tags(approve, who, comment))
    return Verdict(version, VerdictKind.PROMOTED if approve else VerdictKind.REJECTED,
                   f"{'approved' if approve else 'rejected'} by {who}: {comment} (the gate: {waited.reason})",
                   champion_version=waited.champion_version)


def expire(registry: Registry) -> list[str]:
    """Versions that waited longer than approval_timeout_hours become not_approved; returns them."""
    hours = registry.cfg.promotion.approval_timeout_hours
    expired = []
    for row in waiting(registry):
        if not _waited_too_long(row.verdict, hours):
            continue
        with registry.promotion_lock():
            now = from_tags(row.version, registry.version_tags(row.version))
            if now is None or now.kind is not VerdictKind.AWAITING_APPROVAL:
                continue  # decided meanwhile
            record_verdict(registry, verdict := _timed_out(row.version, hours))
        _follow(registry, verdict)
        expired.append(row.version)
    return expired


def _follow(registry: Registry, verdict: Verdict) -> None:
    """The decision on the version's pipeline run and evidence card too; it stands if that fails (`digitpipe card`
    writes the card again)."""
    from digitpipe.card import refresh_decision

    version = verdict.version
    try:
        registry.lineage.follow_decision(verdict)
        refresh_decision(registry, version)
    except Exception as exc:  # noqa: BLE001 (the run and the card report a decision already recorded)
        log.warning(f"v{version}: its evidence card still shows the earlier verdict ({first_line(exc, 160)}); "
                    f"`digitpipe card --version {version}` writes it again")


def _waited_too_long(waited: Verdict, hours: float) -> bool:
    return bool(waited.at) and time.time() - _epoch(waited.at) >= hours * 3600


def _timed_out(version: str, hours: float) -> Verdict:
    return Verdict(version, VerdictKind.NOT_APPROVED,
                   f"waited {hours:g} hours (approval_timeout_hours) without a decision")


def waiting(registry: Registry) -> list[VersionRecord]:
    """The versions awaiting approval, newest first."""
    return [row for row in registry.versions() if row.awaiting]


def _epoch(stamp: str) -> float:
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
