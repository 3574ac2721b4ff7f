// The test nodes' NetworkPolicy enforcer (node.sh): kube-router's network policy controller
// (iptables and ipsets in the node's network namespace) and nothing else of kube-router. Its
// routing (BGP) and service proxy, where the advisories against v2.1.0 are, are not linked in;
// kube-proxy stays the service proxy. Runs beside the kubelet with a kubeconfig of its own.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/cloudnativelabs/kube-router/v2/pkg/controllers/netpol"
	"github.com/cloudnativelabs/kube-router/v2/pkg/healthcheck"
	"github.com/cloudnativelabs/kube-router/v2/pkg/options"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the enforcer's own identity")
	node := flag.String("node", "", "this node's name (its InternalIP tells local pods apart)")
	serviceCIDR := flag.String("service-cluster-ip-range", "10.96.0.0/16", "the cluster's Service range")
	syncPeriod := flag.Duration("sync-period", 5*time.Minute, "full resync besides the one each change triggers")
	flag.Parse()
	if *kubeconfig == "" || *node == "" {
		log.Fatal("--kubeconfig and --node are required")
	}

	restConfig, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig %s: %v", *kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		log.Fatalf("client: %v", err)
	}

	config := options.NewKubeRouterConfig()
	config.RunFirewall = true
	config.EnableIPv4 = true
	config.HostnameOverride = *node
	config.ClusterIPCIDRs = []string{*serviceCIDR}
	config.IPTablesSyncPeriod = *syncPeriod

	stop := make(chan struct{})
	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods().Informer()
	namespaces := factory.Core().V1().Namespaces().Informer()
	policies := factory.Networking().V1().NetworkPolicies().Informer()
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, pods.HasSynced, namespaces.HasSynced, policies.HasSynced) {
		log.Fatal("pods, namespaces and network policies never synced from the API server")
	}

	iptables, ipsets, err := netpol.NewIPTablesHandlers(config)
	if err != nil {
		log.Fatalf("iptables and ipset: %v", err)
	}
	var ipsetMutex sync.Mutex
	controller, err := netpol.NewNetworkPolicyController(client, config, pods, policies, namespaces, &ipsetMutex,
		iptables, ipsets)
	if err != nil {
		log.Fatalf("network policy controller: %v", err)
	}
	for informer, handler := range map[cache.SharedIndexInformer]cache.ResourceEventHandler{
		pods:       controller.PodEventHandler,
		namespaces: controller.NamespaceEventHandler,
		policies:   controller.NetworkPolicyEventHandler,
	} {
		if _, err := informer.AddEventHandler(handler); err != nil {
			log.Fatalf("event handler: %v", err)
		}
	}

	// The controller reports a heartbeat after each sync; nothing here checks them.
	heartbeats := make(chan *healthcheck.ControllerHeartbeat, 10)
	go func() {
		for range heartbeats {
		}
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go controller.Run(heartbeats, stop, &wg)
	log.Printf("enforcing NetworkPolicies on node %s", *node)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	close(stop)
	wg.Wait()
}
