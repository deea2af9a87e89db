// Package reviewui serves incident review in the browser: the incidents of
// a range, an incident's or a storm's timeline drawn as SVG beside its
// explanation, the what-if form and the pipeline's pulse. Every page is
// rendered on the server from pkg/review (the same replay, explain and
// what-if engine as `stormweir replay` and `explain`) with html/template;
// the stylesheet is embedded, so the pages need no JavaScript and no
// network beyond this server. It only reads the streams.
//
// People sign in with one of the receiver's bearer tokens (receiver.auth
// tokens and token_file): once on a login form, which sets an HttpOnly
// cookie holding the token, checked again on every request so a token
// removed from the file locks its holder out; scripts send
// "Authorization: Bearer <token>" instead.
package reviewui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/token"
)

//go:embed templates/*.html assets/*
var files embed.FS

// Options are what a UI reads and whom it lets in.
type Options struct {
	// JS reads the pipeline's streams under Config.Bus.Prefix.
	JS jetstream.JetStream
	// Config is the pipeline's configuration: its bus prefix, and the
	// dedup and aggregator settings a what-if starts from.
	Config config.Config
	// Tokens are the accepted tokens; nil lets everyone in (the
	// receiver's auth disabled).
	Tokens *token.Set
	// Log receives one line per failed page.
	Log *slog.Logger
	// Now is the wall clock relative ranges ("2h") count back from;
	// time.Now when nil.
	Now func() time.Time
}

// UI is the review UI's HTTP handler.
type UI struct {
	o     Options
	mux   *http.ServeMux
	pages map[string]*template.Template

	// last is the previous pulse, so the Now page shows rates.
	mu   sync.Mutex
	last *review.Pulse
}

// New builds the UI's handler.
func New(o Options) (*UI, error) {
	if o.JS == nil {
		return nil, errors.New("review UI: no JetStream")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	u := &UI{o: o, mux: http.NewServeMux(), pages: map[string]*template.Template{}}
	for _, name := range []string{"incidents", "timeline", "whatif", "now", "login", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("review UI template %s: %w", name, err)
		}
		u.pages[name] = t
	}
	assets, err := fs.Sub(files, "assets")
	if err != nil {
		return nil, err
	}
	u.mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(assets)))
	u.mux.HandleFunc("GET /login", u.loginForm)
	u.mux.HandleFunc("POST /login", u.login)
	u.mux.HandleFunc("POST /logout", u.logout)
	u.mux.Handle("GET /{$}", u.auth(http.RedirectHandler("/incidents", http.StatusSeeOther)))
	u.mux.Handle("GET /incidents", u.auth(http.HandlerFunc(u.incidents)))
	u.mux.Handle("GET /incidents/{id}", u.auth(http.HandlerFunc(u.timeline)))
	u.mux.Handle("GET /whatif", u.auth(http.HandlerFunc(u.whatIf)))
	u.mux.Handle("GET /now", u.auth(http.HandlerFunc(u.now)))
	u.mux.Handle("/", u.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.fail(w, r, &pageError{status: http.StatusNotFound, msg: "no such page: " + r.URL.Path})
	})))
	return u, nil
}

// ServeHTTP serves the pages.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	defer func() {
		// A page that panics shows a reason, never a stack trace; the
		// log has what went wrong.
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			u.o.Log.Error("review UI page failed", "path", r.URL.Path, "panic", v)
			u.fail(w, r, &pageError{status: http.StatusInternalServerError, msg: "the page failed to render; the server's log has the details"})
		}
	}()
	u.mux.ServeHTTP(w, r)
}

// pageError is a page that cannot be shown, with the status and the
// reason the user sees.
type pageError struct {
	status int
	msg    string
	// form, when set, is shown under the reason so the input can be
	// corrected (the page's own form with the values given).
	form *rangeForm
}

func (e *pageError) Error() string { return e.msg }

func badRequest(format string, a ...any) *pageError {
	return &pageError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, a...)}
}

// engineError turns an error of the review engine into a page: the
// streams missing or NATS not answering are the server's side (503),
// anything else a 500, each with the engine's one-line reason.
func engineError(err error) *pageError {
	var pe *pageError
	if errors.As(err, &pe) {
		return pe
	}
	switch {
	case errors.Is(err, review.ErrNoStream), errors.Is(err, review.ErrNotStormweir):
		return &pageError{status: http.StatusServiceUnavailable, msg: "cannot review this pipeline: " + err.Error()}
	case errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrDisconnected):
		return &pageError{status: http.StatusServiceUnavailable, msg: "NATS is unreachable, the streams cannot be read: " + err.Error()}
	}
	return &pageError{status: http.StatusInternalServerError, msg: "reading the streams failed: " + err.Error()}
}

// reachable reports NATS not answering before a page waits on it: a
// connection that is reconnecting would hold the page until its timeout.
func (u *UI) reachable() error {
	if nc := u.o.JS.Conn(); nc != nil && !nc.IsConnected() {
		return &pageError{status: http.StatusServiceUnavailable,
			msg: fmt.Sprintf("NATS is unreachable (connection %s), the streams cannot be read: is bus.url right and the server up?", strings.ToLower(nc.Status().String()))}
	}
	return nil
}

// fail shows err as a page of its own with its status.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, err error) {
	pe := engineError(err)
	if pe.status >= 500 {
		u.o.Log.Warn("review UI page failed", "path", r.URL.Path, "status", pe.status, "err", pe.msg)
	}
	u.render(w, pe.status, "error", map[string]any{"Title": http.StatusText(pe.status), "Status": pe.status, "Reason": pe.msg, "Form": pe.form, "Path": r.URL.Path})
}

// render writes a page, buffered so a template error is a clean 500.
func (u *UI) render(w http.ResponseWriter, status int, page string, data map[string]any) {
	var b strings.Builder
	if data["Page"] == nil {
		data["Page"] = page
	}
	data["Auth"] = u.o.Tokens != nil
	if err := u.pages[page].Execute(&b, data); err != nil {
		u.o.Log.Error("review UI template failed", "page", page, "err", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("the page failed to render; the server's log has the details\n"))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}
