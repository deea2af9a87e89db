// Command stormweir is the one binary with every mode: `run` starts the
// whole pipeline in one process, `loadgen` drives a receiver with realistic
// Alertmanager load. The four stage binaries remain for distributed
// deployments.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	ossignal "os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/stormweir/stormweir/pkg/allinone"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/version"
)

const usage = `usage: stormweir <command> [flags]

commands:
  run       every stage in one process on an embedded JetStream server
            (flags: the configuration flags of every binary, e.g. --config,
            --set allinone.store=redis, --print-config)
  loadgen   post Alertmanager webhooks to a receiver and report
            (stormweir loadgen -h for its flags)
  version   print the version, source revision, build date and Go version
            (--json for one JSON object)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		service.MainArgs("stormweir", os.Args[2:], func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
			return allinone.Run(ctx, cfg, log, allinone.Options{})
		})
	case "loadgen":
		os.Exit(runLoadgen(os.Args[2:]))
	case "version":
		os.Exit(runVersion(os.Args[2:]))
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, usage)
	default:
		fmt.Fprintf(os.Stderr, "stormweir: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

func runVersion(args []string) int {
	fs := flag.NewFlagSet("stormweir version", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the build as a JSON object")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	v := version.Get()
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(v)
		return 0
	}
	fmt.Println(v)
	return 0
}

func runLoadgen(args []string) int {
	fs := flag.NewFlagSet("stormweir loadgen", flag.ContinueOnError)
	var c loadgen.Config
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:8080/api/v1/signals/alertmanager", "receiver Alertmanager endpoint")
	fs.StringVar(&c.Token, "token", os.Getenv("STORMWEIR_TOKEN"), "bearer token (default $STORMWEIR_TOKEN)")
	tokenFile := fs.String("token-file", "", "read the bearer token from this file")
	fs.IntVar(&c.Alerts, "alerts", 10000, "alerts to send")
	fs.IntVar(&c.BatchSize, "batch", 100, "alerts per webhook")
	fs.Float64Var(&c.Rate, "rate", 0, "alerts per second (0: as fast as the receiver answers)")
	fs.IntVar(&c.Concurrency, "concurrency", 8, "requests in flight")
	fs.Float64Var(&c.DuplicateRatio, "duplicates", 0.7, "share of alerts repeating an incident already sent")
	fs.Float64Var(&c.StormRatio, "storm", 0.0, "share of new incidents belonging to one storm")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "random seed, for a repeatable load")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c.Seed = *seed
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "stormweir loadgen: %v\n", err)
			return 2
		}
		c.Token = strings.TrimSpace(string(b))
	}
	ctx, stop := ossignal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := loadgen.Run(ctx, c, os.Stderr)
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(rep)
	} else {
		fmt.Printf("requests %d, alerts %d: accepted %d (%d duplicates absorbed), rejected %d, errors %d\n",
			rep.Requests, rep.Alerts, rep.Accepted, rep.Duplicates, rep.Rejected, rep.Errors)
		fmt.Printf("%.0f alerts/s accepted over %s; request latency p50 %s, p99 %s, max %s\n",
			rep.AcceptedPerSec, rep.Elapsed.Round(time.Millisecond), rep.P50, rep.P99, rep.Max)
		fmt.Printf("expected: %d incidents (%d in the storm)\n", rep.Expected.Incidents, rep.Expected.StormIncidents)
	}
	if err != nil || rep.Errors > 0 {
		if err != nil {
			fmt.Fprintf(os.Stderr, "stormweir loadgen: %v\n", err)
		}
		return 1
	}
	return 0
}
