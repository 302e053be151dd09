"""stilts trainer: one phase of one STILTs run, as job.json describes it (see docs/architecture.md)."""
