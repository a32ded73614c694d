"""Names and labels shared by every child of a TransformerModel (and read back by the operator)."""

from __future__ import annotations

from typing import Any

from tmo.api import API_VERSION, GROUP, VERSION, child_name, short_revision

__all__ = ["API_VERSION", "GROUP", "VERSION"]

KIND = "TransformerModel"
PLURAL = "transformermodels"

MANAGED_BY = "tmo-operator"
LABEL_MODEL = "tmo.dev/model"
LABEL_REVISION = "tmo.dev/revision"
LABEL_COMPONENT = "app.kubernetes.io/component"
# The component value of everything that serves a model: pods and their Services.
COMPONENT_MODEL_SERVER = "model-server"
# The component value of one revision's own Service (an HTTPRoute backend during a canary).
COMPONENT_REVISION_SERVICE = "revision-server"
# Hash of the rendered child, so an idle reconcile can tell "nothing to apply" without a write.
ANNOTATION_APPLIED_HASH = "tmo.dev/applied-hash"


def model_labels(name: str) -> dict[str, str]:
    """Labels on every child: selectable by model, and recognisable as TMO's."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "tmo",
        LABEL_MODEL: name,
    }


def revision_labels(name: str, revision: str) -> dict[str, str]:
    return {**model_labels(name), LABEL_REVISION: revision}


def pod_selector(name: str) -> dict[str, str]:
    """Selects the serving pods of every revision of a model (Service, NetworkPolicy), and the
    model's Services, which carry the same pair (ServiceMonitor)."""
    return {LABEL_MODEL: name, LABEL_COMPONENT: COMPONENT_MODEL_SERVER}


def deployment_name(name: str, revision: str) -> str:
    return child_name(name, short_revision(revision))


def config_map_name(name: str, revision: str) -> str:
    # Per revision: pods of the old revision keep their config while the new one rolls in.
    return child_name(name, short_revision(revision), "config")


def service_name(name: str) -> str:
    return name


def revision_service_name(name: str, revision: str) -> str:
    # Same name as the revision's Deployment: different kinds, one name to look for.
    return child_name(name, short_revision(revision))


def metadata(obj: dict[str, Any], name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": obj["metadata"]["namespace"], "labels": labels}
