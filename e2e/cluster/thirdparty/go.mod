// The third-party CRDs TMO's children are checked against (KEDA, Gateway API, Prometheus
// Operator) and those of the GitOps tools that deploy TMO (Argo CD, Flux's source- and
// kustomize-controller; the Flux versions match e2e/flux/*/go.mod, which builds them), pinned
// like the control plane: crds.sh copies them out of these modules (downloaded through the Go
// module proxy and verified against go.sum). Nothing here is compiled.
module tmo.dev/e2e/thirdparty

go 1.26

require (
	github.com/argoproj/argo-cd/v3 v3.5.7
	github.com/fluxcd/kustomize-controller v1.9.6
	github.com/fluxcd/source-controller v1.9.3
	github.com/kedacore/keda/v2 v2.20.2
	github.com/prometheus-operator/prometheus-operator v0.93.0
	sigs.k8s.io/gateway-api v1.6.1
)
