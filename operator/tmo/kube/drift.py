"""Telling a hand edit of a child object from the changes its controllers make.

The applied-hash annotation says which rendering TMO last applied, but a `kubectl edit` of the
child leaves that annotation alone. So right after each apply (and on the first read after a
restart) the operator records a fingerprint of the live child; a later live copy with another
fingerprint was changed by someone else, and the operator applies its rendering again.
"""

from __future__ import annotations

from typing import Any

from tmo.render.revision import stable_hash

# Written by Kubernetes controllers, never by a person or by TMO.
CONTROLLER_ANNOTATION_PREFIXES = ("deployment.kubernetes.io/",)
# Not part of what a child is: identity, bookkeeping, and what controllers report.
_NOT_CONTENT = ("apiVersion", "kind", "metadata", "status")


def fingerprint(kind: str, live: dict[str, Any]) -> str:
    """Hash of what a person could change in a child, minus what controllers change on purpose:
    Deployment `spec.replicas` (the HPA's, through the scale subresource) and controller
    annotations. Labels, annotations, spec and data are all in.

    `kind` is given, not read: the items of a list response carry none."""
    meta = live.get("metadata") or {}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(CONTROLLER_ANNOTATION_PREFIXES)
    }
    content = {k: v for k, v in live.items() if k not in _NOT_CONTENT}
    spec = content.get("spec")
    if kind == "Deployment" and isinstance(spec, dict):
        content["spec"] = {k: v for k, v in spec.items() if k != "replicas"}
    return stable_hash([meta.get("labels") or {}, annotations, content], length=16)
