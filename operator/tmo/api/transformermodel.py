"""TransformerModel: what to serve (DESIGN §2). Docstrings here become the CRD's descriptions."""

from __future__ import annotations

from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field

from tmo.api.common import (
    APIModel,
    LocalObjectReference,
    ObjectMeta,
    ObjectName,
    Quantity,
    SecretKeyReference,
    StatusModel,
)
from tmo.api.conditions import Conditions
from tmo.api.rules import Rule, matches, matches_if_prefixed, unique

KIND: Final = "TransformerModel"

Task = Literal[
    "text-classification",
    "token-classification",
    "summarization",
    "text-generation",
    "image-classification",
    "speech-recognition",
    "feature-extraction",
]
ModelFormat = Literal["huggingface", "mar", "torchscript", "onnx"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
Attention = Literal["sdpa", "eager", "flash_attention_2"]

URI_SCHEMES = ("s3", "gs", "https", "pvc", "hf", "file")
GPU_RESOURCE = "nvidia.com/gpu"

_uri_scheme = matches(
    r"^(s3|gs|https|pvc|hf|mlflow|file)://.+$",
    "must start with one of s3://, gs://, https://, pvc://, hf://, mlflow://, file:// and name a "
    "location",
)
_pvc_uri = matches_if_prefixed(
    "pvc://",
    r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/.*)?$",
    "a pvc:// URI is pvc://CLAIM/path with CLAIM a PersistentVolumeClaim name",
)
_hf_uri = matches_if_prefixed(
    "hf://",
    r"^hf://[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*(@[-A-Za-z0-9_./]+)?$",
    "an hf:// URI is hf://ORG/NAME or hf://ORG/NAME@REVISION",
)

_https_uri = matches_if_prefixed(
    "https://",
    r"^https://[^/]+/.*[^/]$",
    "an https:// URI names one file: an archive (.tar.gz, .tgz, .zip) of the model directory or "
    "a .mar, not a directory (HTTP has no listing)",
)
_mlflow_uri = matches_if_prefixed(
    "mlflow://",
    r"^mlflow://[^/@?#]+(/[1-9][0-9]*|@[A-Za-z0-9_-]+)$",
    "an mlflow:// URI is mlflow://NAME/VERSION or mlflow://NAME@ALIAS (a registered model; "
    "the registry is the Secret's MLFLOW_TRACKING_URI)",
)


class ModelSource(APIModel):
    """Where the model artifact comes from and how it is packaged."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.hfCacheClaim) || self.uri.startsWith('hf://')",
            message="hfCacheClaim serves hf:// models only: remove it or use an hf:// uri",
            check=lambda m: m.hf_cache_claim is None or m.uri.startswith("hf://"),
            field="hfCacheClaim",
        ),
    )

    uri: Annotated[
        str, Field(max_length=2048), _uri_scheme, _pvc_uri, _hf_uri, _https_uri, _mlflow_uri
    ]
    """Location of the model: s3://bucket/path, gs://bucket/path, https://host/path,
    pvc://CLAIM/path, hf://org/name@revision, mlflow://NAME/VERSION (or @ALIAS) or
    file:///path (tmo serve only)."""
    format: ModelFormat = "huggingface"
    """Packaging of the artifact: huggingface (a save_pretrained directory), mar (a TorchServe
    archive), torchscript or onnx."""
    sha256: (
        Annotated[
            str,
            Field(max_length=64),
            matches(r"^[0-9a-f]{64}$", "must be 64 lowercase hex characters (a SHA-256 digest)"),
        ]
        | None
    ) = None
    """SHA-256 of the artifact (of the archive, or of the sorted file digests of a directory).
    Verified before load; a mismatch refuses to serve."""
    credentials_secret_ref: LocalObjectReference | None = None
    """Secret with the credentials to fetch the artifact, given to the fetch container only,
    as environment variables and as files: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    optionally AWS_ENDPOINT_URL / AWS_REGION (s3://); service-account.json (gs://); HF_TOKEN
    and optionally HF_ENDPOINT (hf://); MLFLOW_TRACKING_URI and optionally
    MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (mlflow://)."""
    hf_cache_claim: (
        Annotated[
            str,
            Field(max_length=253),
            matches(
                r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                "must be a PersistentVolumeClaim name (lowercase letters, digits, '-', '.')",
            ),
        ]
        | None
    ) = None
    """PersistentVolumeClaim holding a Hugging Face Hub cache (the layout `hf download
    --cache-dir` writes). With it, an hf:// model is read from the claim, read-only and offline,
    for clusters that cannot reach the Hub; without it, the fetch container downloads it."""


class Runtime(APIModel):
    """TorchServe settings for the model worker."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            # has(): the API server also checks the section's `default: {}` against its rules,
            # before nested defaults exist.
            cel="!has(self.attention) || self.attention != 'flash_attention_2' || "
            "(has(self.precision) && self.precision in ['bf16', 'fp16'])",
            message="flash_attention_2 needs precision bf16 or fp16",
            check=lambda r: r.attention != "flash_attention_2" or r.precision in ("bf16", "fp16"),
            field="attention",
        ),
    )

    image: Annotated[str, Field(max_length=512)] = ""
    """Container image of the model server; empty means the operator's configured default."""
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """TorchServe workers per pod (each holds a copy of the model)."""
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    """Largest batch TorchServe assembles from queued requests."""
    max_batch_delay_ms: Annotated[int, Field(ge=0, le=60000)] = 20
    """How long TorchServe waits to fill a batch, in milliseconds."""
    max_sequence_length: Annotated[int, Field(ge=1, le=1048576)] = 512
    """Longest input in tokens; summarisation chunks longer inputs (long-context models: 8192+)."""
    max_new_tokens: Annotated[int, Field(ge=1, le=32768)] = 256
    """Most tokens one generation request may ask for (parameters.max_new_tokens, OpenAI
    max_tokens); a request asking for more is refused with a 400 naming this limit."""
    max_chunks: Annotated[int, Field(ge=1, le=4096)] = 64
    """Summarisation: most maxSequenceLength windows one document may span; a longer document
    is refused with 413 naming the limit."""
    precision: Precision = "fp32"
    """Numeric precision of the weights: fp32, bf16, fp16 (GPU) or int8 (dynamic quantisation,
    CPU)."""
    attention: Attention = "sdpa"
    """Attention implementation: sdpa, eager or flash_attention_2 (GPU with bf16/fp16 only)."""
    response_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 120
    """TorchServe response timeout per request, in seconds."""


class Resources(APIModel):
    """Compute resources of the model server container (nvidia.com/gpu allowed)."""

    requests: Annotated[dict[str, Quantity], Field(max_length=16)] = Field(default_factory=dict)
    """Minimum resources, e.g. cpu: "1", memory: 2Gi."""
    limits: Annotated[dict[str, Quantity], Field(max_length=16)] = Field(default_factory=dict)
    """Maximum resources, e.g. memory: 2Gi, nvidia.com/gpu: 1. The memory limit is what
    monitoring.memoryUtilization is a fraction of."""


class Scaling(APIModel):
    """Autoscaling on queue length (a KEDA prometheus trigger on in-flight requests)."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.minReplicas) || !has(self.maxReplicas) || "
            "self.minReplicas <= self.maxReplicas",
            message="minReplicas must be less than or equal to maxReplicas",
            check=lambda s: s.min_replicas <= s.max_replicas,
            field="minReplicas",
        ),
    )

    min_replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Fewest replicas; 0 lets the model scale to zero when idle."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 10
    """Most replicas; at least 1 and at least minReplicas."""
    target_queue_length: Annotated[int, Field(ge=1, le=100000)] = 4
    """In-flight requests per replica the autoscaler aims for."""
    cooldown_seconds: Annotated[int, Field(ge=0, le=86400)] = 300
    """Seconds of low load before scaling down."""


class Monitoring(APIModel):
    """Alert thresholds; they are also the default gates of a Rollout's analysis."""

    latency_p99_ms: Annotated[float, Field(gt=0, le=3600000)] = 250.0
    """p99 request latency in milliseconds above which TMOHighLatency fires."""
    memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Fraction (0, 1] of the container memory limit above which TMOMemorySpike fires."""
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    """Fraction [0, 1] of failed (5xx) requests above which TMOHighErrorRate fires."""


class Auth(APIModel):
    """Bearer-token authentication checked by the gateway in front of TorchServe."""

    token_secret_ref: SecretKeyReference
    """Secret key holding the bearer token clients must send."""


class ParentReference(APIModel):
    """A Gateway API parent (usually a Gateway) the HTTPRoute attaches to."""

    name: ObjectName
    """Name of the Gateway."""
    namespace: ObjectName | None = None
    """Namespace of the Gateway; defaults to the model's namespace."""
    section_name: Annotated[str, Field(max_length=253)] | None = None
    """Listener name on the Gateway."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Listener port on the Gateway."""


Hostname = Annotated[
    str,
    Field(max_length=253),
    matches(
        r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        "must be a lowercase DNS hostname, optionally starting with *. (e.g. triage.example.com)",
    ),
]


class Route(APIModel):
    """Exposure through the Gateway API (an HTTPRoute TMO owns)."""

    parent_refs: Annotated[list[ParentReference], Field(min_length=1, max_length=8)]
    """Gateways to attach to."""
    hostnames: Annotated[
        list[Hostname],
        Field(max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}),
        unique(),
    ] = Field(default_factory=list)
    """Hostnames the route answers for."""


class TransformerModelSpec(APIModel):
    """What to serve and how."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.runtime) || !has(self.runtime.attention) || "
            "self.runtime.attention != 'flash_attention_2' || "
            f"(has(self.resources.limits) && '{GPU_RESOURCE}' in self.resources.limits)",
            message=f"flash_attention_2 needs a GPU: set resources.limits[{GPU_RESOURCE}]",
            check=lambda s: (
                s.runtime.attention != "flash_attention_2" or GPU_RESOURCE in s.resources.limits
            ),
            field="runtime.attention",
        ),
    )

    task: Task
    """What the model does: text-classification, token-classification, summarization,
    text-generation, image-classification, speech-recognition or feature-extraction."""
    model: ModelSource
    """The model artifact."""
    runtime: Runtime = Field(default_factory=Runtime, json_schema_extra={"default": {}})
    """TorchServe settings."""
    resources: Resources = Field(default_factory=Resources, json_schema_extra={"default": {}})
    """Compute resources per replica."""
    scaling: Scaling = Field(default_factory=Scaling, json_schema_extra={"default": {}})
    """Autoscaling on queue length."""
    monitoring: Monitoring = Field(default_factory=Monitoring, json_schema_extra={"default": {}})
    """Alert thresholds and default rollout gates."""
    auth: Auth | None = None
    """Bearer-token authentication; absent means no authentication at the gateway."""
    route: Route | None = None
    """Gateway API exposure; absent means a ClusterIP Service only."""


class TransformerModelStatus(StatusModel):
    """Observed state, written by the operator through the status subresource."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation the operator last acted on."""
    revision: Annotated[str, Field(max_length=64)] | None = None
    """Hash of every spec field that changes the pod."""
    url: Annotated[str, Field(max_length=2048)] | None = None
    """In-cluster URL of the inference endpoint."""
    replicas: Annotated[int, Field(ge=0)] | None = None
    """Pods of the model (all revisions)."""
    ready_replicas: Annotated[int, Field(ge=0)] | None = None
    """Pods ready to serve."""
    conditions: Conditions = Field(default_factory=list)
    """Ready always; Reconciling and Stalled while True; domain conditions."""


class TransformerModel(APIModel):
    """A transformer model served by TorchServe, autoscaled on queue length and monitored.
    Changes roll out like a Deployment, or as canaries when a Rollout targets it."""

    api_version: Literal["tmo.dev/v1alpha1"] = "tmo.dev/v1alpha1"
    """APIVersion of this object: tmo.dev/v1alpha1."""
    kind: Literal["TransformerModel"] = "TransformerModel"
    """Kind of this object: TransformerModel."""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: TransformerModelSpec
    """What to serve and how."""
    status: TransformerModelStatus | None = None
    """Observed state (status subresource)."""
