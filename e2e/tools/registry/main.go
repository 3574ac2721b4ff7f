// The CNCF distribution registry with only what the test registry uses: the filesystem storage
// driver, no authentication (the registry listens on the test network only). The cloud storage
// drivers of the upstream command would triple the build.
package main

import (
	"github.com/distribution/distribution/v3/registry"

	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	registry.RootCmd.Execute()
}
