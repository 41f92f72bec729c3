//go:build tools

// Package tools records the command this module builds so that go.sum pins its dependencies.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
