package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// requestTimeout bounds one webhook round trip.
const requestTimeout = 30 * time.Second

// sender posts webhook bodies; each goroutine of a run has its own.
type sender interface {
	// post sends body and returns the status code and response body.
	post(ctx context.Context, body []byte) (int, []byte, error)
	close()
}

// senders returns a constructor of cfg's senders: net/http through
// cfg.Client when one is set or the URL is not plain http, else one
// keep-alive connection per sender.
//
// The connection writes a prebuilt request (head and body in one write)
// and reads the answer with http.ReadResponse: net/http's Transport spends
// two goroutines and their hand-offs per round trip, which made the load
// generator cost as much CPU per single-alert webhook as the receiver.
func senders(cfg Config) (func() sender, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("loadgen: url: %w", err)
	}
	if cfg.Client != nil || u.Scheme != "http" {
		c := cfg.Client
		if c == nil {
			c = &http.Client{Timeout: requestTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency, MaxConnsPerHost: cfg.Concurrency}}
		}
		return func() sender { return &clientSender{c: c, url: cfg.URL, token: cfg.Token} }, nil
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: stormweir-loadgen\r\nContent-Type: application/json\r\n", u.RequestURI(), u.Host)
	if cfg.Token != "" {
		fmt.Fprintf(&head, "Authorization: Bearer %s\r\n", cfg.Token)
	}
	head.WriteString("Content-Length: ")
	return func() sender { return &connSender{addr: host, head: head.Bytes()} }, nil
}

// clientSender posts through a net/http client.
type clientSender struct {
	c          *http.Client
	url, token string
}

func (s *clientSender) post(ctx context.Context, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (s *clientSender) close() {}

// connSender posts over one HTTP/1.1 keep-alive connection, dialled on
// first use and again after any error.
type connSender struct {
	addr string
	// head is the request up to the Content-Length value.
	head []byte
	conn net.Conn
	r    *bufio.Reader
	buf  []byte
}

func (s *connSender) post(ctx context.Context, body []byte) (int, []byte, error) {
	if s.conn == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", s.addr)
		if err != nil {
			return 0, nil, err
		}
		s.conn, s.r = c, bufio.NewReaderSize(c, 16<<10)
	}
	// A cancelled run interrupts the round trip in flight.
	c := s.conn
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	code, b, err := s.roundTrip(body)
	if err != nil {
		s.close()
	}
	return code, b, err
}

func (s *connSender) roundTrip(body []byte) (int, []byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		return 0, nil, err
	}
	s.buf = append(append(append(s.buf[:0], s.head...), strconv.Itoa(len(body))...), "\r\n\r\n"...)
	bufs := net.Buffers{s.buf, body}
	if _, err := bufs.WriteTo(s.conn); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(s.r, nil)
	if err != nil {
		return 0, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return 0, nil, err
	}
	if resp.Close {
		s.close()
	}
	return resp.StatusCode, b, nil
}

func (s *connSender) close() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn, s.r = nil, nil
	}
}
