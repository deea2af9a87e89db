// Command writer is stormweir's writer stage: incident and storm events in,
// one RemediationRequest per real incident out (DESIGN §5).
package main

import "github.com/stormweir/stormweir/pkg/app"

func main() { app.Main(app.Writer) }
