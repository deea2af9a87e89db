package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/redrive"
	"github.com/stormweir/stormweir/pkg/review"
)

// intoFlags are replay's re-drive flags: instead of printing the
// selected signals' timelines, publish them into another pipeline.
type intoFlags struct {
	into, to, id string
	rate         float64
}

func (f *intoFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.into, "into", "", "re-publish the selected signals into the pipeline with this bus prefix (e.g. a staging one) instead of printing timelines")
	fs.StringVar(&f.to, "to", "", "with --into: that pipeline's NATS URL, when not the one replayed (credentials in the URL: nats://user:password@host:4222)")
	fs.Float64Var(&f.rate, "rate", 0, "with --into: at most this many signals per second (0: as fast as the target stores them)")
	fs.StringVar(&f.id, "replay-id", "", "with --into: the re-drive's id, which scopes the message ids (default: a new one; give an earlier one to finish an interrupted re-drive without sending a signal twice)")
}

// enabled reports whether a re-drive was asked for.
func (f *intoFlags) enabled() bool { return f.into != "" }

// check refuses re-drive flags that cannot work, before anything is read
// or written; src is the pipeline replayed, whatIf whether settings to
// try were given.
func (f *intoFlags) check(src config.Bus, whatIf bool) error {
	if f.into == "" {
		if f.to != "" || f.rate != 0 || f.id != "" {
			return cli.Usagef("--to, --rate and --replay-id go with --into PREFIX")
		}
		return nil
	}
	if whatIf {
		return cli.Usagef("--into re-drives the recorded signals; it does not go with a what-if")
	}
	if f.rate < 0 {
		return cli.Usagef("--rate %g: must be positive (or 0 for as fast as the target stores them)", f.rate)
	}
	if f.into == src.Prefix && (f.to == "" || f.to == src.URL) {
		return cli.Usagef("--into %q is the pipeline replayed: re-drive into another prefix, or another NATS with --to", f.into)
	}
	return nil
}

// redriveSignals publishes the signals sel selects from the pipeline on
// src into the one --into and --to name, and says how many it stored.
func (f *intoFlags) redriveSignals(ctx context.Context, out io.Writer, src *bus.Conn, srcBus config.Bus, sel review.Selector) error {
	target := src
	if f.to != "" {
		tb := config.Bus{URL: f.to, PublishTimeout: srcBus.PublishTimeout}
		conn, err := bus.Dial(tb, f.into+"-redrive", slog.New(slog.DiscardHandler), nats.Timeout(5*time.Second))
		if err != nil {
			return fmt.Errorf("--to: %w", err)
		}
		defer conn.Close()
		target = conn
	}
	id := f.id
	if id == "" {
		id = redrive.NewID(time.Now())
	}
	r, err := redrive.New(ctx, target.JS, redrive.Options{Prefix: f.into, ID: id, Rate: f.rate, PublishTimeout: srcBus.PublishTimeout})
	if err != nil {
		return err
	}
	defer r.Close()
	err = redrive.Select(ctx, src.JS, srcBus.Prefix, sel, func(m *redrive.Recorded) error {
		return r.Send(ctx, m.Subject, m.Data, m.Header, m.At)
	})
	if err == nil {
		err = r.Flush(ctx)
	}
	stored, dups := r.Sent()
	if err != nil {
		if stored+dups > 0 {
			return fmt.Errorf("%w (re-drive %s stopped after %d signals: run it again with --replay-id %s to finish it)", err, id, stored+dups, id)
		}
		return err
	}
	_, err = fmt.Fprintf(out, "re-drove %d signals into %q as re-drive %s: %d stored, %d already there\n", stored+dups, f.into, id, stored, dups)
	return err
}
