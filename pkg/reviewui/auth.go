package reviewui

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/stormweir/stormweir/pkg/token"
)

// CookieName is the cookie the login form sets: the token itself, HttpOnly
// and SameSite=Strict, checked against the tokens on every request.
const CookieName = "stormweir_review"

// auth lets a request in with a token in the cookie or an Authorization
// header; a browser without one is sent to the login form, anything else
// gets a 401.
func (u *UI) auth(next http.Handler) http.Handler {
	if u.o.Tokens == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u.allowed(r) {
			next.ServeHTTP(w, r)
			return
		}
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="stormweir review"`)
		u.fail(w, r, &pageError{status: http.StatusUnauthorized, msg: "sign in with one of the receiver's tokens (receiver.auth.tokens or token_file) at /login, or send Authorization: Bearer <token>"})
	})
}

func (u *UI) allowed(r *http.Request) bool {
	if tok, ok := token.FromHeader(r.Header.Get("Authorization")); ok {
		ok, _ := u.o.Tokens.Match(tok)
		return ok
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		ok, _ := u.o.Tokens.Match(c.Value)
		return ok
	}
	return false
}

// localPath keeps a redirect target on this server: a path, never
// another host ("//evil", "https://…").
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/incidents"
	}
	return next
}

func (u *UI) loginForm(w http.ResponseWriter, r *http.Request) {
	u.render(w, http.StatusOK, "login", map[string]any{"Title": "Sign in", "Next": localPath(r.URL.Query().Get("next"))})
}

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	next := localPath(r.FormValue("next"))
	if u.o.Tokens == nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	tok := strings.TrimSpace(r.FormValue("token"))
	if ok, _ := u.o.Tokens.Match(tok); tok == "" || !ok {
		u.render(w, http.StatusUnauthorized, "login", map[string]any{"Title": "Sign in", "Next": next,
			"Reason": "that is not one of the receiver's tokens (receiver.auth.tokens or token_file)"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
