// Package redisclient builds the go-redis UniversalClient for every
// topology stormweir supports (single node, Sentinel, Cluster) from one
// configuration section.
package redisclient

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stormweir/stormweir/pkg/config"
)

// New returns a client for cfg. It does not dial; use Check for readiness.
func New(cfg config.Redis) redis.UniversalClient {
	opts := &redis.UniversalOptions{
		Addrs:            cfg.Addrs,
		Username:         cfg.Username,
		Password:         cfg.Password,
		SentinelPassword: cfg.SentinelPassword,
		DB:               cfg.DB,
		DialTimeout:      cfg.DialTimeout,
		ReadTimeout:      cfg.ReadTimeout,
		WriteTimeout:     cfg.WriteTimeout,
		PoolSize:         cfg.PoolSize,
		// A failing command is retried by the bus (Nak with backoff), not
		// by the client, so an outage is seen at once and counted.
		MaxRetries: 1,
	}
	switch cfg.Mode {
	case "cluster":
		c := redis.NewClusterClient(opts.Cluster())
		c.AddHook(reloadHook{c: c})
		return c
	case "sentinel":
		opts.MasterName = cfg.MasterName
		return redis.NewFailoverClient(opts.Failover())
	default:
		return redis.NewClient(opts.Simple())
	}
}

// Check pings Redis; readiness probes call it.
func Check(ctx context.Context, c redis.UniversalClient) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}
