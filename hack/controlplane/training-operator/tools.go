//go:build tools

// Package tools pins the commands built from this module so that go mod tidy keeps them.
package tools

import _ "github.com/kubeflow/training-operator/cmd/training-operator.v1"
