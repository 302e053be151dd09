"""stilts trainer: one phase of one STILTs run (see DESIGN.md, trainer contract)."""

__version__ = "0.1.0"
