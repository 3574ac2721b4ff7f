//go:build tools

// Pins the Prometheus server that tools.sh builds (e2e-nodes.sh: Kubernetes discovery).
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
