// Command receiver is stormweir's HTTP intake: Alertmanager webhooks and
// Kubernetes events in, signals on the bus out.
package main

import (
	"context"
	"log/slog"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/service"
)

func main() {
	service.Main("receiver", func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		p, err := service.NewProcess(ctx, cfg, log, "receiver")
		if err != nil {
			return err
		}
		defer p.Close()
		r, err := receiver.New(cfg, p)
		if err != nil {
			return err
		}
		log.Info("receiver listening", "addr", r.Addr())
		return r.Run(ctx)
	})
}
