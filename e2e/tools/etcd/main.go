// Command etcd is etcd's server built from Go modules at the pinned version: `go install` of
// etcd's own module fails on its replace directives, so this wrapper calls its entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
