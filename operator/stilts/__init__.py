"""stilts control plane (see DESIGN.md): spec, plan, executors, report, operator."""

__version__ = "0.1.0"
