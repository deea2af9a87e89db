package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable stormweir reads:
// STORMWEIR_BUS_URL sets bus.url, STORMWEIR_REDIS_ADDRS sets redis.addrs
// (comma-separated).
const EnvPrefix = "STORMWEIR"

// Loaded is the result of Load: the effective configuration and what the
// command line asked for besides.
type Loaded struct {
	Config Config
	// PrintConfig is set by --print-config: print Config and exit.
	PrintConfig bool
	// Args are the positional arguments left after the flags.
	Args []string
}

// Flags are the configuration flags every binary shares: --config,
// --set, --print-config and the shortcuts of frequent keys. They live on a
// caller's flag set so a command line library (cobra in cmd/stormweir and
// pkg/cli) can show them in its help next to the command's own flags.
type Flags struct {
	file      *string
	printCfg  *bool
	sets      *[]string
	shortcuts map[string]*string
}

// AddFlags defines the configuration flags on fs.
func AddFlags(fs *pflag.FlagSet) *Flags {
	return &Flags{
		file:     fs.StringP("config", "c", os.Getenv(EnvPrefix+"_CONFIG"), "YAML configuration file (or $"+EnvPrefix+"_CONFIG)"),
		printCfg: fs.Bool("print-config", false, "print the effective configuration (secrets redacted) and exit"),
		sets:     fs.StringArray("set", nil, "override one key, e.g. --set dedup.window=10m (repeatable)"),
		shortcuts: map[string]*string{
			"bus.url":           fs.String("nats-url", "", "NATS URL (bus.url)"),
			"redis.addrs":       fs.String("redis-addrs", "", "Redis addresses, comma-separated (redis.addrs)"),
			"receiver.listen":   fs.String("listen", "", "receiver listen address (receiver.listen)"),
			"worker.listen":     fs.String("metrics-listen", "", "health and metrics listen address (worker.listen)"),
			"log.level":         fs.String("log-level", "", "log level: debug, info, warn, error (log.level)"),
			"writer.kubeconfig": fs.String("kubeconfig", "", "kubeconfig path (writer.kubeconfig)"),
		},
	}
}

// PrintConfig reports whether --print-config was given.
func (f *Flags) PrintConfig() bool { return *f.printCfg }

// Load builds the effective configuration for the binary called name:
// defaults, then the YAML file (--config or STORMWEIR_CONFIG), then
// STORMWEIR_* environment variables, then flags (--set key=value and the
// shortcuts below), and validates the result.
func Load(name string, args []string) (*Loaded, error) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", name, err, fs.FlagUsages())
	}
	cfg, err := f.Load(Default())
	if err != nil {
		return nil, err
	}
	return &Loaded{Config: cfg, PrintConfig: f.PrintConfig(), Args: fs.Args()}, nil
}

// Load builds the effective configuration from defaults (Default(), or a
// command's own, e.g. `stormweir run` listening on 127.0.0.1 only), the
// YAML file, the environment and the parsed flags, and validates it.
func (f *Flags) Load(defaults Config) (Config, error) {
	file, sets, shortcuts := f.file, f.sets, f.shortcuts
	v := viper.New()
	v.SetConfigType("yaml")
	base, err := yaml.Marshal(defaults)
	if err != nil {
		return Config{}, fmt.Errorf("encoding defaults: %w", err)
	}
	if err := v.ReadConfig(bytes.NewReader(base)); err != nil {
		return Config{}, fmt.Errorf("loading defaults: %w", err)
	}
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return Config{}, fmt.Errorf("reading config file: %w", err)
		}
		if err := v.MergeConfig(bytes.NewReader(b)); err != nil {
			return Config{}, fmt.Errorf("parsing config file %s: %w", *file, err)
		}
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	s := newSchema()
	// Every problem of the command line, the environment and the file is
	// reported at once, as Validate does for values.
	problems := s.checkEnv(os.Environ())
	for key, val := range shortcuts {
		if *val != "" {
			v.Set(key, *val)
		}
	}
	for _, kv := range *sets {
		key, val, ok := strings.Cut(kv, "=")
		switch {
		case !ok || key == "":
			problems = append(problems, fmt.Errorf("--set %q: want key=value", kv))
		case !v.IsSet(key):
			problems = append(problems, fmt.Errorf("--set %q: unknown key %q%s", kv, key, s.suggestKey(key)))
		default:
			v.Set(key, val)
		}
	}

	var cfg Config
	// ErrorUnused makes mapstructure report every key the schema does not
	// have, in the file's nested sections and inside list entries
	// (writer.priority[0].severty) alike: a typo is an error, not a
	// silently ignored setting. Keys from --set and the environment cannot
	// be unknown here: both are checked above.
	err = v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			splitListHook,
		)
	})
	problems = append(problems, s.decodeProblems(err)...)
	if len(problems) > 0 {
		return Config{}, fmt.Errorf("configuration:\n%w", errors.Join(problems...))
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// Print writes cfg as YAML with secrets redacted. Secret files are shown
// by path only; credentials written into bus.url are masked.
func Print(w io.Writer, cfg Config) error {
	cfg.Bus.URL = RedactURLs(cfg.Bus.URL)
	cfg.Redis.Password = redact(cfg.Redis.Password)
	cfg.Redis.SentinelPassword = redact(cfg.Redis.SentinelPassword)
	tokens := make([]string, len(cfg.Receiver.Auth.Tokens))
	for i := range tokens {
		tokens[i] = redact("x")
	}
	cfg.Receiver.Auth.Tokens = tokens
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "<redacted>"
}

// RedactURLs masks the credentials of each URL in a comma-separated
// list, for printing and logging: nats://user:secret@host and
// nats://token@host both carry one.
func RedactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			if strings.Contains(p, "@") {
				parts[i] = redact(p)
			}
			continue
		}
		if u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "redacted")
		} else {
			u.User = url.User("redacted")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// splitListHook lets one string (an environment variable or --set value)
// fill any list: "a,b" becomes ["a", "b"], whatever the element type.
func splitListHook(from, to reflect.Type, data any) (any, error) {
	s, ok := data.(string)
	if !ok || from.Kind() != reflect.String || to.Kind() != reflect.Slice {
		return data, nil
	}
	if strings.TrimSpace(s) == "" {
		return []string{}, nil
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts, nil
}
