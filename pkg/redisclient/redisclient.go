// Package redisclient builds the go-redis UniversalClient for every
// topology stormweir supports (single node, Sentinel, Cluster) from one
// configuration section.
package redisclient

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stormweir/stormweir/pkg/config"
)

// New returns a client for cfg. It reads the password and TLS files now,
// so a missing or unreadable one is an error naming its key, but does not
// dial; use Check for readiness. The password file is read again for
// every new connection, so a rotated password needs no restart.
func New(cfg config.Redis) (redis.UniversalClient, error) {
	tlsConfig, err := cfg.TLS.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	sentinelPassword := cfg.SentinelPassword
	if cfg.SentinelPasswordFile != "" {
		if sentinelPassword, err = config.ReadSecret("redis.sentinel_password_file", cfg.SentinelPasswordFile); err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
	}
	opts := &redis.UniversalOptions{
		Addrs:            cfg.Addrs,
		Username:         cfg.Username,
		Password:         cfg.Password,
		SentinelPassword: sentinelPassword,
		DB:               cfg.DB,
		DialTimeout:      cfg.DialTimeout,
		ReadTimeout:      cfg.ReadTimeout,
		WriteTimeout:     cfg.WriteTimeout,
		PoolSize:         cfg.PoolSize,
		TLSConfig:        tlsConfig,
		// A failing command is retried by the bus (Nak with backoff), not
		// by the client, so an outage is seen at once and counted.
		MaxRetries: 1,
	}
	if cfg.PasswordFile != "" {
		if _, err := config.ReadSecret("redis.password_file", cfg.PasswordFile); err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		opts.CredentialsProviderContext = func(context.Context) (string, string, error) {
			pw, err := config.ReadSecret("redis.password_file", cfg.PasswordFile)
			return cfg.Username, pw, err
		}
	}
	switch cfg.Mode {
	case "cluster":
		c := redis.NewClusterClient(opts.Cluster())
		c.AddHook(reloadHook{c: c})
		return c, nil
	case "sentinel":
		opts.MasterName = cfg.MasterName
		return redis.NewFailoverClient(opts.Failover()), nil
	default:
		return redis.NewClient(opts.Simple()), nil
	}
}

// Check pings Redis; readiness probes call it. A refused password says
// which settings to look at.
func Check(ctx context.Context, c redis.UniversalClient) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return Explain(err)
	}
	return nil
}

// Explain wraps a Redis error for the operator: an authentication
// failure names the settings that fix it.
func Explain(err error) error {
	msg := err.Error()
	noauth := strings.Contains(msg, "NOAUTH")
	wrongpass := strings.Contains(msg, "WRONGPASS") || strings.Contains(msg, "invalid username-password pair")
	sentinel := strings.Contains(msg, "sentinels")
	switch {
	case noauth && sentinel:
		return fmt.Errorf("the redis sentinels require a password (set redis.sentinel_password_file): %w", err)
	case wrongpass && sentinel:
		return fmt.Errorf("the redis sentinels refused the password (check redis.sentinel_password_file): %w", err)
	case noauth:
		return fmt.Errorf("redis requires a password (set redis.password_file): %w", err)
	case wrongpass:
		return fmt.Errorf("redis refused the password (check redis.username and redis.password_file): %w", err)
	case strings.HasPrefix(msg, "redis: "):
		return err
	}
	return fmt.Errorf("redis: %w", err)
}
