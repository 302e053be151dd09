"""What experiments may use, set by the cluster admin (the chart's `policy` values).

Creating a TransferExperiment amounts to creating pods: with this image, that claim, that Secret's
HF_TOKEN (or MLflow credentials), that priority class, those node selectors and tolerations. The admin's policy limits each;
an experiment outside it is refused with one line per broken rule (a PolicyViolation condition) and
gets no job. Empty lists allow anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .spec import ExperimentSpec

DEFAULT_TRAINER_IMAGE = "ghcr.io/stilts-dev/stilts-trainer:0.1.0"


@dataclass(frozen=True)
class AdmissionPolicy:
    allowed_image_prefixes: tuple[str, ...] = ()
    allowed_priority_classes: tuple[str, ...] = ()
    allowed_node_selector_keys: tuple[str, ...] = ()
    allowed_toleration_keys: tuple[str, ...] = ()
    allowed_hf_token_secrets: tuple[str, ...] = ()
    allowed_storage_classes: tuple[str, ...] = ()
    allowed_mlflow_credentials_secrets: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, text: str) -> "AdmissionPolicy":
        """The chart's `policy` values, as the operator's STILTS_POLICY (camelCase keys)."""
        raw = json.loads(text or "{}")
        names = {"allowedImagePrefixes": "allowed_image_prefixes", "allowedPriorityClasses": "allowed_priority_classes",
                 "allowedNodeSelectorKeys": "allowed_node_selector_keys",
                 "allowedTolerationKeys": "allowed_toleration_keys",
                 "allowedHfTokenSecrets": "allowed_hf_token_secrets", "allowedStorageClasses": "allowed_storage_classes",
                 "allowedMlflowCredentialsSecrets": "allowed_mlflow_credentials_secrets"}
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ValueError(f"policy: unknown setting(s) {unknown}; known: {sorted(names)}")
        return cls(**{names[k]: tuple(v or ()) for k, v in raw.items()})


def effective_image(spec: ExperimentSpec, default: str) -> str:
    return spec.image or default


def violations(spec: ExperimentSpec, policy: AdmissionPolicy, default_image: str) -> list[str]:
    """One line per broken rule, naming the field, what it holds and what the policy allows."""
    out = []

    def check(field: str, value: str, allowed: tuple[str, ...], prefix: bool = False) -> None:
        ok = any(value.startswith(a) for a in allowed) if prefix else value in allowed
        if allowed and value and not ok:
            what = "under an allowed prefix" if prefix else "allowed"
            out.append(f"{field}: {value!r} is not {what} ({', '.join(allowed)}); the cluster admin sets this "
                       "in the operator's policy")

    check("spec.image", effective_image(spec, default_image), policy.allowed_image_prefixes, prefix=True)
    check("spec.scheduling.priorityClassName", spec.scheduling.priority_class_name, policy.allowed_priority_classes)
    for key in spec.scheduling.node_selector:
        check("spec.scheduling.nodeSelector", key, policy.allowed_node_selector_keys)
    for i, toleration in enumerate(spec.scheduling.tolerations):
        if policy.allowed_toleration_keys and not toleration.key:
            out.append(f"spec.scheduling.tolerations[{i}]: a toleration without a key tolerates every taint; "
                       f"allowed keys: {', '.join(policy.allowed_toleration_keys)}")
        check(f"spec.scheduling.tolerations[{i}].key", toleration.key, policy.allowed_toleration_keys)
    check("spec.hfTokenSecret", spec.hf_token_secret, policy.allowed_hf_token_secrets)
    if spec.tracking and spec.tracking.mlflow:  # pods read this Secret too
        check("spec.tracking.mlflow.credentialsSecret", spec.tracking.mlflow.credentials_secret,
              policy.allowed_mlflow_credentials_secrets)
    if not spec.storage.claim_name:
        check("spec.storage.storageClassName", spec.storage.storage_class_name or "(the cluster default)",
              policy.allowed_storage_classes)
    return out
