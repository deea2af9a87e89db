package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// readerInactiveThreshold is how long nats-server keeps a reader's
// consumer that was never deleted (its process died mid-read): long
// enough for a slow read between two pulls, short enough that crashed
// readers do not pile up.
const readerInactiveThreshold = 30 * time.Second

// OpenReader opens an ordered ephemeral consumer for one read of st (a
// review, a DLQ scan, a re-drive) and returns it with a release that
// deletes it on the server; call release when the read is done, after
// stopping its iterator.
//
// Without the release the consumer would stay until its inactive
// threshold (5 minutes by default in nats.go), and nats-server refuses a
// stream's consumers beyond a limit (1,000 by default): readers that poll
// — the review pages refreshing, a replay run in a loop — would fill it
// and then keep a restarting stage from creating its durable consumer.
func OpenReader(ctx context.Context, st jetstream.Stream, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, func(), error) {
	if cfg.InactiveThreshold == 0 {
		cfg.InactiveThreshold = readerInactiveThreshold
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	release := func() {
		// An ordered consumer recreates itself after a gap, deleting the
		// one before; the current one is the one left.
		info := cons.CachedInfo()
		if info == nil {
			return
		}
		// The read's context may be done: deleting must not depend on it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = st.DeleteConsumer(ctx, info.Name)
	}
	return cons, release, nil
}
