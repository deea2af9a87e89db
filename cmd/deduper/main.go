// Command deduper is stormweir's dedup stage: signals in, one incident per
// fingerprint kept in Redis, incident events out (DESIGN §3).
package main

import (
	"context"
	"log/slog"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/service"
)

func main() {
	service.Main("deduper", func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		p, err := service.NewProcess(ctx, cfg, log, "deduper")
		if err != nil {
			return err
		}
		defer p.Close()
		rc, err := redisclient.New(cfg.Redis)
		if err != nil {
			return err
		}
		defer rc.Close()
		st, err := dedup.New(ctx, p, dedup.NewRedisStore(rc, cfg.Redis.KeyPrefix, cfg.Dedup, clock.Real{}))
		if err != nil {
			return err
		}
		return p.Serve(ctx, st)
	})
}
