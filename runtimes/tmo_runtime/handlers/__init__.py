"""TorchServe handlers, one per task; `entry.handle` is what TorchServe calls."""
