// Package token checks the static bearer tokens of receiver.auth: the
// tokens of the configuration and of a token file re-read when it
// changes. The receiver lets webhook senders in with them and the review
// UI lets people in with the same tokens, so one list of secrets guards
// both.
package token

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
)

// Set is the accepted tokens. Those of the file are re-read when the file
// changes (checked at most once a second of its clock), so tokens rotate
// without a restart. It keeps digests only.
type Set struct {
	static [][32]byte
	file   string
	clk    clock.Clock

	mu        sync.Mutex
	fromFile  [][32]byte
	fileMod   time.Time
	fileSize  int64
	lastCheck time.Time
}

// New returns the tokens of cfg (its tokens and token file; TokenReview
// and Disabled are the receiver's business). A token file that cannot be
// read is an error.
func New(cfg config.Auth, clk clock.Clock) (*Set, error) {
	s := &Set{file: cfg.TokenFile, clk: clk}
	for _, t := range cfg.Tokens {
		s.static = append(s.static, sha256.Sum256([]byte(t)))
	}
	if s.file != "" {
		if err := s.reload(true); err != nil {
			return nil, err
		}
		s.lastCheck = clk.Now()
	}
	return s, nil
}

// Configured reports whether cfg names any token: tokens or a token file.
func Configured(cfg config.Auth) bool { return len(cfg.Tokens) > 0 || cfg.TokenFile != "" }

// reload re-reads the token file if it changed. A file that became
// unreadable keeps the last good tokens: a botched rotation should not
// lock everyone out.
func (s *Set) reload(force bool) error {
	fi, err := os.Stat(s.file)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if !force && fi.ModTime().Equal(s.fileMod) && fi.Size() == s.fileSize {
		return nil
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	var toks [][32]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		toks = append(toks, sha256.Sum256([]byte(line)))
	}
	s.fromFile, s.fileMod, s.fileSize = toks, fi.ModTime(), fi.Size()
	return nil
}

// Match reports whether tok is one of the tokens; sum is its SHA-256
// digest, returned for a caller that goes on to ask elsewhere (the
// receiver's TokenReview cache is keyed by it).
func (s *Set) Match(tok string) (ok bool, sum [32]byte) {
	// Compare fixed-size digests in constant time, so neither the token's
	// content nor its length leaks through timing.
	sum = sha256.Sum256([]byte(tok))
	match := 0
	for i := range s.static {
		match |= subtle.ConstantTimeCompare(sum[:], s.static[i][:])
	}
	if s.file != "" {
		s.mu.Lock()
		if now := s.clk.Now(); now.Sub(s.lastCheck) >= time.Second {
			s.lastCheck = now
			_ = s.reload(false)
		}
		for i := range s.fromFile {
			match |= subtle.ConstantTimeCompare(sum[:], s.fromFile[i][:])
		}
		s.mu.Unlock()
	}
	return match == 1, sum
}

// FromHeader returns the credentials of an Authorization header of the
// Bearer scheme. The scheme name is case-insensitive and may be followed by
// several spaces (RFC 7235 §2.1, RFC 6750 §2.1): senders write "bearer" as
// well as "Bearer".
func FromHeader(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
