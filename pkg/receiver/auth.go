package receiver

import (
	"net/http"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/token"
)

// authenticator checks bearer tokens: the configured ones and those of the
// token file (pkg/token, shared with the review UI) and, with
// TokenReview, the API server vouches for the others.
type authenticator struct {
	disabled bool
	tokens   *token.Set
	reviewer *tokenReviewer
}

func newAuthenticator(cfg config.Auth, clk clock.Clock) (*authenticator, error) {
	tokens, err := token.New(cfg, clk)
	if err != nil {
		return nil, err
	}
	return &authenticator{disabled: cfg.Disabled, tokens: tokens}, nil
}

// authenticate returns nil when r carries an accepted token for posting
// signals of src, or why it is not let in: errUnauthorized, errForbidden
// or errAuthUnavailable.
func (a *authenticator) authenticate(r *http.Request, src signal.Source) error {
	if a.disabled {
		return nil
	}
	tok, ok := token.FromHeader(r.Header.Get("Authorization"))
	if !ok {
		return errUnauthorized
	}
	match, sum := a.tokens.Match(tok)
	if match {
		return nil
	}
	if a.reviewer == nil {
		return errUnauthorized
	}
	return a.reviewer.check(r.Context(), tok, sum, src)
}
