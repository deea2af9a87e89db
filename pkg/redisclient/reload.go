package redisclient

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
)

// reloadHook makes a cluster client reload its slot map after a failed
// command. go-redis follows MOVED on its own, but a master that died
// leaves "connection refused" on its slots until the next periodic reload
// (a minute by default); the promoted replica should take over within a
// failover, not a minute. go-redis coalesces the reloads.
type reloadHook struct{ c *redis.ClusterClient }

func (h reloadHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		h.failed(err)
		return conn, err
	}
}

func (h reloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.failed(err)
		return err
	}
}

func (h reloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.failed(err)
		return err
	}
}

func (h reloadHook) failed(err error) {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return
	}
	h.c.ReloadState(context.Background())
}
