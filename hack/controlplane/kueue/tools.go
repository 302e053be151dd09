//go:build tools

// Package tools pins the Kueue controller so that go mod tidy keeps it.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
