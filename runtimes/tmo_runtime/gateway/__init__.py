"""The gateway: the only port a client reaches in a model pod (auth, metrics, OIP v2)."""
