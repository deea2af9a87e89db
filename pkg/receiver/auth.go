package receiver

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/signal"
)

// authenticator checks bearer tokens. Tokens come from the configuration
// and from a file that is re-read when it changes (checked at most once a
// second of the receiver's clock), so tokens rotate without a restart;
// with TokenReview, the API server vouches for the others.
type authenticator struct {
	disabled bool
	static   [][32]byte
	file     string
	reviewer *tokenReviewer

	mu        sync.Mutex
	fromFile  [][32]byte
	fileMod   time.Time
	fileSize  int64
	lastCheck time.Time
	clk       clock.Clock
}

func newAuthenticator(cfg config.Auth, clk clock.Clock) (*authenticator, error) {
	a := &authenticator{disabled: cfg.Disabled, file: cfg.TokenFile, clk: clk}
	for _, t := range cfg.Tokens {
		a.static = append(a.static, sha256.Sum256([]byte(t)))
	}
	if a.file != "" {
		if err := a.reload(true); err != nil {
			return nil, err
		}
		a.lastCheck = clk.Now()
	}
	return a, nil
}

// reload re-reads the token file if it changed. A file that became
// unreadable keeps the last good tokens: a botched rotation should not
// lock every sender out.
func (a *authenticator) reload(force bool) error {
	fi, err := os.Stat(a.file)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if !force && fi.ModTime().Equal(a.fileMod) && fi.Size() == a.fileSize {
		return nil
	}
	b, err := os.ReadFile(a.file)
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
	a.fromFile, a.fileMod, a.fileSize = toks, fi.ModTime(), fi.Size()
	return nil
}

// authenticate returns nil when r carries an accepted token for posting
// signals of src, or why it is not let in: errUnauthorized, errForbidden
// or errAuthUnavailable.
func (a *authenticator) authenticate(r *http.Request, src signal.Source) error {
	if a.disabled {
		return nil
	}
	tok, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		return errUnauthorized
	}
	// Compare fixed-size digests in constant time, so neither the token's
	// content nor its length leaks through timing.
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for i := range a.static {
		match |= subtle.ConstantTimeCompare(sum[:], a.static[i][:])
	}
	if a.file != "" {
		a.mu.Lock()
		if now := a.clk.Now(); now.Sub(a.lastCheck) >= time.Second {
			a.lastCheck = now
			_ = a.reload(false)
		}
		for i := range a.fromFile {
			match |= subtle.ConstantTimeCompare(sum[:], a.fromFile[i][:])
		}
		a.mu.Unlock()
	}
	if match == 1 {
		return nil
	}
	if a.reviewer == nil {
		return errUnauthorized
	}
	return a.reviewer.check(r.Context(), tok, sum, src)
}

// bearerToken returns the credentials of an Authorization header of the
// Bearer scheme. The scheme name is case-insensitive and may be followed by
// several spaces (RFC 7235 §2.1, RFC 6750 §2.1): senders write "bearer" as
// well as "Bearer".
func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
