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
	MasterName string `mapstructure:"master_name" yaml:"master_name"`
	// Username is the ACL user; empty is Redis's default user.
	Username string `mapstructure:"username" yaml:"username"`
	// Password is for development; deployments use PasswordFile.
	Password string `mapstructure:"password" yaml:"password"`
	// PasswordFile holds the password (a mounted Secret). It is read at
	// start-up and again for every new connection, so a rotated password
	// is picked up without a restart.
	PasswordFile string `mapstructure:"password_file" yaml:"password_file"`
	// SentinelPassword (or SentinelPasswordFile, read at start-up)
	// authenticates to the Sentinels, which may have a password of their
	// own.
	SentinelPassword     string `mapstructure:"sentinel_password" yaml:"sentinel_password"`
	SentinelPasswordFile string `mapstructure:"sentinel_password_file" yaml:"sentinel_password_file"`
	DB                   int    `mapstructure:"db" yaml:"db"`
	// TLS secures connections to every node (and to the Sentinels).
	TLS RedisTLS `mapstructure:"tls" yaml:"tls"`
	// KeyPrefix starts every key stormweir writes.
	KeyPrefix    string        `mapstructure:"key_prefix" yaml:"key_prefix"`
	DialTimeout  time.Duration `mapstructure:"dial_timeout" yaml:"dial_timeout"`
	ReadTimeout  time.Duration `mapstructure:"read_timeout" yaml:"read_timeout"`
	WriteTimeout time.Duration `mapstructure:"write_timeout" yaml:"write_timeout"`
	PoolSize     int           `mapstructure:"pool_size" yaml:"pool_size"`
}

// RedisTLS configures TLS to Redis. The files are read at start-up.
type RedisTLS struct {
	// Enabled turns TLS on; the other fields need it.
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// CAFile holds the PEM certificates that may sign the servers'
	// certificates; empty trusts the system roots.
	CAFile string `mapstructure:"ca_file" yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and its key
	// (redis-server's tls-auth-clients).
	CertFile string `mapstructure:"cert_file" yaml:"cert_file"`
	KeyFile  string `mapstructure:"key_file" yaml:"key_file"`
	// ServerName is the name every server's certificate must carry. Set
	// it for Sentinel and Cluster, whose nodes are announced by IP
	// address; empty checks each node's host.
	ServerName string `mapstructure:"server_name" yaml:"server_name"`
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
	if r.Password != "" && r.PasswordFile != "" {
		errs = append(errs, errors.New("redis.password and redis.password_file: set one"))
	}
	if r.SentinelPassword != "" && r.SentinelPasswordFile != "" {
		errs = append(errs, errors.New("redis.sentinel_password and redis.sentinel_password_file: set one"))
	}
	if r.Mode != "sentinel" && (r.SentinelPassword != "" || r.SentinelPasswordFile != "") {
		errs = append(errs, fmt.Errorf("redis.sentinel_password: only used in sentinel mode, not %s", r.Mode))
	}
	errs = append(errs, r.TLS.validate())
	errs = append(errs, positive("redis.dial_timeout", r.DialTimeout), positive("redis.read_timeout", r.ReadTimeout), positive("redis.write_timeout", r.WriteTimeout))
	if r.PoolSize < 1 {
		errs = append(errs, errors.New("redis.pool_size: must be at least 1"))
	}
	return errors.Join(errs...)
}

func (t RedisTLS) validate() error {
	if !t.Enabled {
		for _, f := range []struct{ key, val string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"server_name", t.ServerName}} {
			if f.val != "" {
				return fmt.Errorf("redis.tls.%s: set, but redis.tls.enabled is false; enable TLS or remove it", f.key)
			}
		}
		return nil
	}
	return validateKeyPair("redis.tls", t.CertFile, t.KeyFile)
}
