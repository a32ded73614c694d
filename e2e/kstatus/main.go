// Command kstatus prints what Flux's own status reader (sigs.k8s.io/cli-utils/pkg/kstatus)
// makes of Kubernetes objects: e2e tests feed it TMO's custom resources to check that Flux
// reports Current / InProgress / Failed for the matching states.
//
// Usage: kubectl get tm NAME -o json | kstatus   ->   {"status":"Current","message":"..."}
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	// Unstructured's own decoder keeps integers as int64 (plain encoding/json makes every number
	// a float64, and kstatus then fails reading metadata.generation).
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		fail(fmt.Errorf("stdin is not a Kubernetes object: %w", err))
	}
	res, err := status.Compute(obj)
	if err != nil {
		fail(err)
	}
	out, _ := json.Marshal(map[string]string{"status": res.Status.String(), "message": res.Message})
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}
