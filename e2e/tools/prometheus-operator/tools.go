//go:build tools

// Pins the Prometheus Operator that tools.sh builds (e2e-nodes.sh: the chart's monitors and rules
// turned into a Prometheus configuration by the real operator).
package tools

import _ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
