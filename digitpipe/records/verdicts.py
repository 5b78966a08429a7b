"""Verdicts: what the promotion gate, a person or a hand promotion decided about a registered version, as a kind
and a reason. `to_tags` and `from_tags` are the only places verdict tags are written and read; tags written by
earlier versions of digitpipe read the same (the tag names and values never changed)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from digitpipe.records.evidence import Evidence
from digitpipe.runtime import utc_now


class VerdictKind(enum.Enum):
    """What was decided; the value is the version's `verdict` tag."""

    PROMOTED = "promoted"  # by the gate, or approved by a person
    PROMOTED_BY_HAND = "promoted_by_hand"  # `digitpipe promote`, without the gate
    REJECTED = "rejected"  # by the gate, or by a person
    NOT_COMPARABLE = "not_comparable"  # too few held-out digits new to both to judge it against the champion
    NOT_CANDIDATE = "not_candidate"  # another model of its own pipeline run was better
    AWAITING_APPROVAL = "awaiting_approval"  # earned promotion; a person decides (promotion.approval: required)
    NOT_PROMOTED = "not_promoted"  # the gate could not judge it (no promotion lock): trained and judged again
    NOT_APPROVED = "not_approved"  # approval came too late: trained and judged again
    INTERRUPTED = "interrupted"  # its run stopped (signal, kill) before the gate judged it: trained and judged again

    @property
    def promoted(self) -> bool:
        return self in (VerdictKind.PROMOTED, VerdictKind.PROMOTED_BY_HAND)

    @property
    def stands(self) -> bool:
        """Whether the decision stands, so that the same training is not run and judged again."""
        return self not in (VerdictKind.NOT_PROMOTED, VerdictKind.NOT_APPROVED, VerdictKind.INTERRUPTED)


# Before the gate's own reason in the `verdict_reason` tag of a version awaiting approval.
WAITS = "earned promotion, waits for a person (promotion.approval: required): "


@dataclass(frozen=True)
class Verdict:
    """One decision about one registered version. For a version awaiting approval, `reason` is the gate's."""

    version: str
    kind: VerdictKind
    reason: str
    challenger_accuracy: float | None = None
    champion_version: str | None = None  # the champion it was compared with, if any
    evidence: Evidence | None = None
    at: str | None = None  # when it was decided (UTC, ISO 8601); None until recorded

    @property
    def promoted(self) -> bool:
        return self.kind.promoted

    @property
    def said(self) -> str:
        """The reason as a person reads it (and the `verdict_reason` tag holds it)."""
        return WAITS + self.reason if self.kind is VerdictKind.AWAITING_APPROVAL else self.reason

    def line(self) -> str:
        """The stage line: v3 promoted: beats the champion ..."""
        return f"v{self.version} {self.kind.value}: {self.said}"

    def summary(self) -> dict[str, str]:
        """The decision in a run's JSON summary."""
        return {"version": self.version, "verdict": self.kind.value, "reason": self.said}


def to_tags(verdict: Verdict) -> dict[str, object]:
    """The decision as model-version tags (stamped now), with the evidence it was weighed on."""
    tags = {"verdict": verdict.kind.value, "verdict_reason": verdict.said, "verdict_at": utc_now(),
            "challenger_accuracy": verdict.challenger_accuracy, "champion_version": verdict.champion_version}
    evidence = verdict.evidence
    if evidence and (comparison := evidence.comparison):
        tags |= {"champion_accuracy": comparison.champion_accuracy,
                 "challenger_accuracy": comparison.challenger_accuracy,
                 "mcnemar_p_value": f"{comparison.p_value:.3g}",
                 "only_challenger_right": comparison.only_challenger_right,
                 "only_champion_right": comparison.only_champion_right,
                 "comparison_excluded": evidence.excluded}
    if evidence and (robust := evidence.robust):
        tags |= {"challenger_robust_accuracy": robust.challenger, "champion_robust_accuracy": robust.champion,
                 "robust_digits": robust.digits, "robust_difference_upper_bound": robust.upper_bound}
    for family, people in (evidence.people if evidence else {}).items():
        tags |= {f"challenger_{family}_accuracy": people.challenger, f"champion_{family}_accuracy": people.champion,
                 f"{family}_digits": people.digits, f"{family}_difference_upper_bound": people.upper_bound,
                 f"{family}_p_value": None if people.p_value is None else f"{people.p_value:.3g}"}
    if evidence and (feedback := evidence.feedback):
        tags |= {"feedback_images": feedback.images, "challenger_feedback_accuracy": feedback.challenger_accuracy,
                 "champion_feedback_accuracy": feedback.champion_accuracy,
                 "feedback_p_value": f"{feedback.p_value:.3g}"}
    return {k: v for k, v in tags.items() if v is not None}


def from_tags(version: str, tags: Mapping[str, str]) -> Verdict | None:
    """The decision recorded on a version (None: not judged yet, or a verdict this digitpipe does not know)."""
    try:
        kind = VerdictKind(tags.get("verdict"))
    except ValueError:
        return None
    reason = tags.get("verdict_reason", "")
    if kind is VerdictKind.AWAITING_APPROVAL:
        reason = reason.removeprefix(WAITS)
    accuracy = tags.get("challenger_accuracy")
    return Verdict(version, kind, reason, float(accuracy) if accuracy else None, tags.get("champion_version"),
                   at=tags.get("verdict_at"))


def run_tags(verdict: Verdict) -> dict[str, str]:
    """The decision on its candidate, as tags of the pipeline run."""
    return {"verdict": verdict.kind.value, "verdict_reason": verdict.said}


def approval_tags(approve: bool, who: str, comment: str) -> dict[str, str]:
    """A person's decision, beside the verdict it makes."""
    return {"approved_by": who, "approved_at": utc_now(), "approval_comment": comment,
            "approval_decision": "approved" if approve else VerdictKind.REJECTED.value}

