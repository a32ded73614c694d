// The third-party CRDs TMO's children are checked against, pinned like the control plane:
// crds.sh copies them out of these modules (downloaded through the Go module proxy and
// verified against go.sum). Nothing here is compiled.
module tmo.dev/e2e/thirdparty

go 1.26

require (
	github.com/kedacore/keda/v2 v2.20.2
	github.com/prometheus-operator/prometheus-operator v0.93.0
	sigs.k8s.io/gateway-api v1.6.1
)
