//go:build tools

// Package tools pins the Kubeflow Trainer v2 controller (TrainJob) so that go mod tidy keeps it.
package tools

import _ "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager"
