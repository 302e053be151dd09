//go:build tools

// Package tools pins the JobSet controller (its main package is the module root) so that go mod
// tidy keeps it; `go install sigs.k8s.io/jobset@v0.12.0` is refused by the proxy (no version list).
package tools

import _ "sigs.k8s.io/jobset"
