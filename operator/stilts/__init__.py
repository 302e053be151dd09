"""stilts control plane: spec, plan, scheduler, executors (local and operator), report (see docs/architecture.md)."""
