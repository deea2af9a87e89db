// Command etcd is the etcd server used as the envtest control plane's
// storage backend. It lives in its own module so that etcd's dependency
// versions never fight with kube-apiserver's or the main module's.
// Build it with hack/testbins.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
