"""Approval by a person (promotion.approval: required): a version that earned promotion waits as
`awaiting_approval`; a person approves it (it becomes the champion, if the champion is still the one it beat) or
rejects it; left waiting past approval_timeout_hours, it is `not_approved`. Each decision is recorded on the
version: approved_by, approved_at, approval_comment."""

from __future__ import annotations

import calendar
import os
import time

from digitpipe.errors import UserError
from digitpipe.promotion import Verdict, move_champion, record_verdict, user
from digitpipe.runtime import utc_now
from digitpipe.tracking import Registry

AWAITING = "awaiting_approval"


def decide(registry: Registry, version: str, comment: str, approve: bool = True, who: str | None = None) -> Verdict:
    """A person's decision on a waiting version (made by `who`, else `approver()`), under the promotion lock: the
    version's verdict and the champion read again there, so that of two decisions at once one decides and the
    other is told it came too late."""
    if not comment.strip():
        raise UserError("--comment: say why (it is recorded on the version)")
    registry.version_tags(version)  # a clear error for a version that does not exist
    who = who or approver()
    with registry.promotion_lock():
        tags = registry.version_tags(version)
        if tags.get("verdict") != AWAITING:
            raise UserError(f"v{version} is not awaiting approval: it was decided already "
                            f"({tags.get('verdict', 'not judged')}: {tags.get('verdict_reason', '')[:120]})")
        champion = registry.champion()
        judged_against = tags.get("champion_version")
        if approve and (champion and champion.version) != judged_against:
            raise UserError(f"v{version} was judged against champion "
                            f"{'v' + judged_against if judged_against else 'none'}, but the champion is now "
                            f"{'v' + champion.version if champion else 'none'}: not approved (the next run judges "
                            "against the new champion)")
        if approve:
            move_champion(registry, version, champion)
        verdict = Verdict(version, "promoted" if approve else "rejected",
                          f"{'approved' if approve else 'rejected'} by {who}: {comment} (the gate: "
                          f"{tags.get('verdict_reason', '').removeprefix('earned promotion, waits for a person ')})",
                          champion_version=judged_against)
        record_verdict(registry, verdict)
        registry.set_version_tags(version, {"approved_by": who, "approved_at": utc_now(),
                                            "approval_comment": comment,
                                            "approval_decision": "approved" if approve else "rejected"})
    return verdict


def expire(registry: Registry) -> list[str]:
    """Versions that waited longer than approval_timeout_hours become not_approved; returns them."""
    limit = registry.cfg.promotion.approval_timeout_hours * 3600
    expired = []
    for row in registry.versions():
        since = row.get("verdict_at")
        if row.get("verdict") != AWAITING or not since or time.time() - _epoch(since) < limit:
            continue
        with registry.promotion_lock():
            if registry.version_tags(row["version"]).get("verdict") != AWAITING:
                continue  # decided meanwhile
            record_verdict(registry, Verdict(row["version"], "not_approved", f"waited {limit / 3600:g} hours "
                                             f"(approval_timeout_hours) without a decision"))
        expired.append(row["version"])
    return expired


def waiting(registry: Registry) -> list[dict[str, str]]:
    """The versions awaiting approval, newest first."""
    return [row for row in registry.versions() if row.get("verdict") == AWAITING]


def approver() -> str:
    """Who decides: the MLflow account where the server has authentication, else the user of this machine."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or user()


def _epoch(stamp: str) -> float:
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
