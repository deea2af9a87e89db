// Command deduper is stormweir's dedup stage: signals in, one incident per
// fingerprint kept in Redis, incident events out (DESIGN §3).
package main

import "github.com/stormweir/stormweir/pkg/app"

func main() { app.Main(app.Deduper) }
