// CoreDNS with only the plugins the test clusters' DNS needs: cluster names from the API server
// (kubernetes), health and readiness endpoints for the pod's probes, error logging, and a fixed
// NXDOMAIN for every other name (template). No forward plugin: nothing leaves the machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

// The order plugins see a query in, as in CoreDNS's plugin.cfg, restricted to the ones above.
func init() {
	dnsserver.Directives = []string{"ready", "health", "errors", "log", "loadbalance", "template", "kubernetes"}
}

func main() {
	coremain.Run()
}
