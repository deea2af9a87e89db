// Command aggregator is stormweir's storm stage: new incidents in, storm
// windows kept in Redis, individual incidents and storm incidents out
// (DESIGN §4).
package main

import "github.com/stormweir/stormweir/pkg/app"

func main() { app.Main(app.Aggregator) }
