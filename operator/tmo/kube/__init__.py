"""The operator's shell: kopf watches, the reconcile loop, and the Kubernetes client."""
