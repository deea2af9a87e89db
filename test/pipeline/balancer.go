package pipeline

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// balancer spreads TCP connections over several receivers, round robin,
// as a Kubernetes Service does: each connection goes to one receiver for
// its whole life. A receiver that is down refuses the dial and the next
// one is tried, so a sender that reconnects after a receiver's crash
// reaches a live one.
type balancer struct {
	l        net.Listener
	backends []string
	next     atomic.Uint64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	// wg counts the accept loop and every connection's goroutines; Close
	// waits for them.
	wg sync.WaitGroup
}

// startBalancer listens on a free loopback port in front of backends.
func startBalancer(backends []string) (*balancer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	b := &balancer{l: l, backends: backends, conns: map[net.Conn]struct{}{}}
	b.wg.Go(b.serve)
	return b, nil
}

// Addr is the balancer's host:port.
func (b *balancer) Addr() string { return b.l.Addr().String() }

func (b *balancer) serve() {
	for {
		c, err := b.l.Accept()
		if err != nil {
			return // closed
		}
		if !b.track(c) {
			_ = c.Close()
			return
		}
		b.wg.Go(func() { b.handle(c) })
	}
}

// handle splices c to the next backend that accepts a connection; when
// either side ends, both are closed.
func (b *balancer) handle(c net.Conn) {
	defer b.untrack(c)
	var up net.Conn
	for range b.backends {
		addr := b.backends[b.next.Add(1)%uint64(len(b.backends))]
		var err error
		if up, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	if up == nil || !b.track(up) {
		if up != nil {
			_ = up.Close()
		}
		return
	}
	defer b.untrack(up)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c)
		_ = up.Close()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	_ = c.Close()
	<-done
}

// track registers a connection for Close; false once closed.
func (b *balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *balancer) untrack(c net.Conn) {
	_ = c.Close()
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
}

// Close stops listening, closes every connection and waits for the
// balancer's goroutines.
func (b *balancer) Close() {
	_ = b.l.Close()
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
