"""How child object names derive from a resource's name, and the length limit that follows.

Every object the operator creates for a TransformerModel named N is called N or N-<suffix>, where
the longest suffix is `-<revision>-canary` (the canary Deployment of a revision). Services and
label values must be DNS-1035 labels of at most 63 characters, so N may be at most
63 - len(LONGEST_CHILD_SUFFIX) = 45 characters. The CRDs enforce MAX_NAME_LENGTH at admission;
`child_name` refuses any suffix longer than the reserved one, so the two cannot drift apart.
"""

from __future__ import annotations

import re

# A DNS-1035 label: what a Service name must be, and the strictest rule a child name meets.
DNS_LABEL_MAX = 63
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Characters of the revision hash that appear in child names (status.revision is this long).
REVISION_LENGTH = 10
CANARY = "canary"
STABLE = "stable"
# The longest suffix the reconciler appends: "-<revision>-canary".
LONGEST_CHILD_SUFFIX = f"-{'0' * REVISION_LENGTH}-{CANARY}"
MAX_NAME_LENGTH = DNS_LABEL_MAX - len(LONGEST_CHILD_SUFFIX)

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


def child_name(owner: str, *parts: str) -> str:
    """`owner-part-part...`, the name of an object derived from `owner`.

    Raises ValueError when the suffix is longer than LONGEST_CHILD_SUFFIX (it could then overflow
    63 characters for an admitted owner name) or when a part is not a lowercase DNS label piece.
    """
    for part in parts:
        if not _LABEL.match(part):
            raise ValueError(f"child name part {part!r} is not a lowercase DNS label")
    suffix = "".join(f"-{p}" for p in parts)
    if len(suffix) > len(LONGEST_CHILD_SUFFIX):
        raise ValueError(
            f"child name suffix {suffix!r} is longer than the {len(LONGEST_CHILD_SUFFIX)} "
            "characters reserved by MAX_NAME_LENGTH"
        )
    name = owner + suffix
    if len(name) > DNS_LABEL_MAX:
        raise ValueError(f"child name {name!r} is longer than {DNS_LABEL_MAX} characters")
    return name


def short_revision(revision: str) -> str:
    """The part of a revision hash used in child names."""
    return revision[:REVISION_LENGTH]
