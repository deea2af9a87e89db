// Command aggregator is stormweir's storm stage: new incidents in, storm
// windows kept in Redis, individual incidents and storm incidents out
// (DESIGN §4).
package main

import (
	"context"
	"log/slog"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/storm"
)

func main() {
	service.Main("aggregator", func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		p, err := service.NewProcess(ctx, cfg, log, "aggregator")
		if err != nil {
			return err
		}
		defer p.Close()
		rc, err := redisclient.New(cfg.Redis)
		if err != nil {
			return err
		}
		defer rc.Close()
		incidents := dedup.NewRedisStore(rc, cfg.Redis.KeyPrefix, cfg.Dedup, clock.Real{})
		st, err := storm.New(ctx, p, storm.NewRedisStore(rc, cfg.Redis.KeyPrefix, 0), incidents, clock.Real{})
		if err != nil {
			return err
		}
		return p.Serve(ctx, st)
	})
}
