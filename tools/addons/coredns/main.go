// Command coredns is the test bed node's cluster DNS: CoreDNS with only the plugins its
// Corefile uses (wedsync_testbed.node_addons), so that the build compiles none of the cloud
// providers' SDKs the full plugin set pulls in. Plugin order is CoreDNS's own
// (dnsserver.Directives); a plugin missing here fails the Corefile at start-up.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
