package config

import (
	"errors"
	"fmt"
	"time"
)

// Redis configures the shared state store. Mode picks the topology; the
// client is go-redis's UniversalClient in every case.
type Redis struct {
	// Mode is single, sentinel or cluster.
	Mode string `mapstructure:"mode" yaml:"mode"`
	// Addrs are host:port seeds (one for single, sentinels for sentinel,
	// any nodes for cluster).
	Addrs []string `mapstructure:"addrs" yaml:"addrs"`
	// MasterName is the Sentinel master name.
	MasterName       string `mapstructure:"master_name" yaml:"master_name"`
	Username         string `mapstructure:"username" yaml:"username"`
	Password         string `mapstructure:"password" yaml:"password"`
	SentinelPassword string `mapstructure:"sentinel_password" yaml:"sentinel_password"`
	DB               int    `mapstructure:"db" yaml:"db"`
	// KeyPrefix starts every key stormweir writes.
	KeyPrefix    string        `mapstructure:"key_prefix" yaml:"key_prefix"`
	DialTimeout  time.Duration `mapstructure:"dial_timeout" yaml:"dial_timeout"`
	ReadTimeout  time.Duration `mapstructure:"read_timeout" yaml:"read_timeout"`
	WriteTimeout time.Duration `mapstructure:"write_timeout" yaml:"write_timeout"`
	PoolSize     int           `mapstructure:"pool_size" yaml:"pool_size"`
}

// DefaultRedis returns the Redis defaults.
func DefaultRedis() Redis {
	return Redis{
		Mode:         "single",
		Addrs:        []string{"127.0.0.1:6379"},
		KeyPrefix:    "stormweir",
		DialTimeout:  2 * time.Second,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		PoolSize:     64,
	}
}

// Validate checks the redis section.
func (r Redis) Validate() error {
	var errs []error
	switch r.Mode {
	case "single", "cluster":
	case "sentinel":
		if r.MasterName == "" {
			errs = append(errs, errors.New("redis.master_name: required in sentinel mode"))
		}
	default:
		errs = append(errs, fmt.Errorf("redis.mode: %q is not single, sentinel or cluster", r.Mode))
	}
	if len(r.Addrs) == 0 {
		errs = append(errs, errors.New("redis.addrs: at least one address is required"))
	}
	if r.Mode == "cluster" && r.DB != 0 {
		errs = append(errs, errors.New("redis.db: Redis Cluster has only database 0"))
	}
	if !prefixRE.MatchString(r.KeyPrefix) {
		errs = append(errs, fmt.Errorf("redis.key_prefix: %q must be letters, digits, '_' or '-'", r.KeyPrefix))
	}
	errs = append(errs, positive("redis.dial_timeout", r.DialTimeout), positive("redis.read_timeout", r.ReadTimeout), positive("redis.write_timeout", r.WriteTimeout))
	if r.PoolSize < 1 {
		errs = append(errs, errors.New("redis.pool_size: must be at least 1"))
	}
	return errors.Join(errs...)
}
