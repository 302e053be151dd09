"""The contract between stilts' control plane (operator/) and its worker (trainer/).

Both import this package; it imports neither (no torch, no kopf). Everything that the two sides
must agree on is defined here, once:

- `names`: phases, XNLI languages, the baseline's name, built-in tiny model ids, exit codes and
  the commit marker;
- `tasks`: what the control plane needs to know of each task (format, members, languages, the
  hyperparameters it reads, whether it reads local files, whether it contains the target's data);
- `job`: the job.json model, with its single set of defaults and every check that needs only the
  file;
- `rules`: cross-field rules as plain functions (the CRD's CEL versions are tested to agree);
- `summary`: the schema of the summary a finished job leaves in COMPLETE and the termination log.

See docs/architecture.md for how the parts fit.
"""
