// Command writer is stormweir's writer stage: incident and storm events in,
// one RemediationRequest per real incident out (DESIGN §5).
package main

import (
	"context"
	"log/slog"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/writer"
)

func main() {
	service.Main("writer", func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		rest, err := writer.RestConfig(cfg.Writer)
		if err != nil {
			return err
		}
		p, err := service.NewProcess(ctx, cfg, log, "writer")
		if err != nil {
			return err
		}
		defer p.Close()
		rc, err := redisclient.New(cfg.Redis)
		if err != nil {
			return err
		}
		defer rc.Close()
		w, err := writer.New(ctx, writer.Options{
			Process:    p,
			Store:      dedup.NewRedisStore(rc, cfg.Redis.KeyPrefix, cfg.Dedup, clock.Real{}),
			RestConfig: rest,
			Clock:      clock.Real{},
		})
		if err != nil {
			return err
		}
		return p.Serve(ctx, w)
	})
}
