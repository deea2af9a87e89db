// Command receiver is stormweir's HTTP intake: Alertmanager webhooks and
// Kubernetes events in, signals on the bus out.
package main

import "github.com/stormweir/stormweir/pkg/app"

func main() { app.Main(app.Receiver) }
