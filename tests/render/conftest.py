from __future__ import annotations

import copy
from typing import Any

import pytest

MANIFEST: dict[str, Any] = {
    "apiVersion": "tmo.dev/v1alpha1",
    "kind": "TransformerModel",
    "metadata": {"name": "email-triage", "namespace": "ml"},
    "spec": {
        "task": "text-classification",
        "model": {
            "uri": "s3://models/tinybert-email/v3/",
            "format": "huggingface",
            "credentialsSecretRef": {"name": "s3-creds"},
        },
        "runtime": {"workers": 2, "batchSize": 8, "maxBatchDelayMs": 20},
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
        "scaling": {"minReplicas": 2, "maxReplicas": 10, "targetQueueLength": 4},
        "monitoring": {"latencyP99Ms": 250, "memoryUtilization": 0.9, "errorRate": 0.01},
        "auth": {"tokenSecretRef": {"name": "email-triage-token", "key": "token"}},
    },
}


@pytest.fixture
def manifest() -> dict[str, Any]:
    return copy.deepcopy(MANIFEST)
