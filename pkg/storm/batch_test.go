package storm

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/test/testenv"
)

// Concurrent callers, some of whom give up early, each get their own
// reply from one shared pipeline after another (pkg/batch tests the
// queueing itself).
func TestScriptBatcher_callersSendAndEveryCallAnswers(t *testing.T) {
	r := testenv.LocalRedis(t)
	echo := redis.NewScript(`return {ARGV[1]}`)
	b := newScriptBatcher(r.Client)
	const callers = 2000
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			ctx := context.Background()
			if i%7 == 0 {
				// A caller whose message was abandoned: its call may
				// still be sent by someone else.
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			want := fmt.Sprint(i)
			res, err := b.run(ctx, echo, []string{r.Prefix + ":k"}, want)
			switch {
			case i%7 == 0:
				if err == nil && (len(res) != 1 || res[0] != want) {
					errs[i] = fmt.Errorf("caller %d got %v", i, res)
				}
			case err != nil:
				errs[i] = fmt.Errorf("caller %d: %w", i, err)
			case len(res) != 1 || res[0] != want:
				errs[i] = fmt.Errorf("caller %d got %v", i, res)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}
