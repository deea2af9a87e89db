package deps
import (
 _ "github.com/nats-io/nats.go/jetstream"
 _ "github.com/nats-io/nats-server/v2/server"
 _ "github.com/redis/go-redis/v9"
 _ "github.com/spf13/viper"
 _ "github.com/spf13/pflag"
 _ "github.com/stretchr/testify/require"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "golang.org/x/sync/errgroup"
 _ "k8s.io/client-go/kubernetes"
 _ "sigs.k8s.io/controller-runtime/pkg/envtest"
 _ "github.com/testcontainers/testcontainers-go"
)
