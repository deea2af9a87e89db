package allinone

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/writer"
)

// A storm's members arrive every 10ms for 20s: the printer prints the
// create and then one line per write the writer's coalescer would make
// (spacing 500ms doubling to 10s), not one per member, and the last state
// is printed when the run ends.
func TestPrinter_oneLinePerWriteNotPerUpdate(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC))
	var out bytes.Buffer
	pr := &Printer{out: &out, clk: clk, interval: 500 * time.Millisecond, maxInterval: 10 * time.Second, entries: map[string]*printEntry{}}
	rr := &v1alpha1.RemediationRequest{}
	rr.Name, rr.Namespace = "rr-storm", "shop"
	rr.Status.Storm = &v1alpha1.StormStatus{Members: 11}
	require.NoError(t, pr.record(writer.Write{Request: rr.DeepCopy(), Created: true}))

	members := 11
	for step := 1; step <= 2000; step++ {
		clk.Advance(10 * time.Millisecond)
		members++
		rr.Status.Storm.Members = int64(members)
		require.NoError(t, pr.record(writer.Write{Request: rr.DeepCopy()}))
		if step%50 == 0 { // the flush timer, every 500ms
			pr.flush(false)
		}
	}
	pr.flush(true)

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var status []string
	for _, l := range lines {
		if strings.HasPrefix(l, "# ") {
			status = append(status, l)
		}
	}
	// Writes at 0.5, 1.5, 3.5, 7.5, 15.5s (spacing 0.5, 1, 2, 4, 8, then
	// 10s), and the final state at the end.
	assert.Len(t, status, 6, "%s", strings.Join(status, "\n"))
	assert.Equal(t, "# shop/rr-storm status: members=2011 affected=0", status[len(status)-1])
	assert.Equal(t, 1, strings.Count(out.String(), "---\n"))
}

// A resolve is written after the base interval, whatever the spacing.
func TestPrinter_urgentWaitsTheBaseIntervalOnly(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC))
	var out bytes.Buffer
	pr := &Printer{out: &out, clk: clk, interval: 500 * time.Millisecond, maxInterval: 10 * time.Second, entries: map[string]*printEntry{}}
	rr := &v1alpha1.RemediationRequest{}
	rr.Name, rr.Namespace = "rr-1", "shop"
	rr.Status.Signal = &v1alpha1.SignalStatus{State: v1alpha1.SignalFiring}
	require.NoError(t, pr.record(writer.Write{Request: rr.DeepCopy(), Created: true}))
	pr.entries["rr-1"].spacing = 8 * time.Second

	clk.Advance(100 * time.Millisecond)
	rr.Status.Signal.State = v1alpha1.SignalResolved
	require.NoError(t, pr.record(writer.Write{Request: rr.DeepCopy(), Urgent: true}))
	pr.flush(false)
	assert.NotContains(t, out.String(), "state=resolved", "within the base interval")
	clk.Advance(400 * time.Millisecond)
	pr.flush(false)
	assert.Contains(t, out.String(), "# shop/rr-1 status: state=resolved\n")
}
