"""Fixtures for tests against the real control plane. Missing binaries skip here, with one line
naming them, and fail on CI (CI=true), where `make test` has built them."""

from __future__ import annotations

import itertools
import os

import pytest

from .harness import (OUR_CRD, ControlPlane, PodSimulator, TrainerV2, TrainingOperator, missing_binaries,
                      missing_v2_binaries)


def _require_binaries(missing: list[str]):
    if missing:
        message = (f"control-plane binaries missing: {', '.join(missing)} "
                   "(run `make controlplane`; it needs Go >= 1.26)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    _require_binaries(missing_binaries())
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    try:  # a start that fails half-way still stops what it started
        plane.start(controller_manager=False)
        plane.apply_crd(OUR_CRD)
        if not missing_v2_binaries():
            plane.v2 = TrainerV2(plane).install_crds()
        plane.start_controller_manager()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def training_operator(control_plane):
    return TrainingOperator(control_plane).start()


@pytest.fixture(scope="session")
def trainer_v2(control_plane):
    """Kubeflow Trainer v2, JobSet and Kueue, for the trainjob backend."""
    _require_binaries(missing_v2_binaries())
    return control_plane.v2.start()


@pytest.fixture
def pod_simulator(control_plane):
    return PodSimulator(control_plane.api_client())


_namespaces = itertools.count(1)


@pytest.fixture
def namespace(control_plane, request):
    """A fresh namespace per test."""
    from kubernetes import client
    stem = request.node.originalname.lower().replace("_", "-").removeprefix("test-")[:40].strip("-")
    name = f"t{next(_namespaces)}-{stem}"
    client.CoreV1Api(control_plane.api_client()).create_namespace({"metadata": {"name": name}})
    return name
