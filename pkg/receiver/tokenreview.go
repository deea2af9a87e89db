package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Why a request was not let in. errUnauthorized is 401, errForbidden 403;
// errAuthUnavailable is 503 with Retry-After: the sender may well be
// allowed, but nobody could say so now, and nothing unproven gets in.
var (
	errUnauthorized    = errors.New("a valid bearer token is required")
	errForbidden       = errors.New("the token's identity may not post signals of this source")
	errAuthUnavailable = errors.New("the token could not be reviewed now; retry later")
)

// Signals are authorized as the virtual resource signals.stormweir.io,
// verb create, named after the source, so RBAC can allow a sender one
// endpoint and not another.
const (
	sarGroup    = "stormweir.io"
	sarResource = "signals"
	sarVerb     = "create"
)

// tokenReviewer asks the API server who a ServiceAccount token belongs to
// (TokenReview) and, optionally, whether it may post (SubjectAccessReview).
type tokenReviewer struct {
	cfg     config.TokenReview
	client  kubernetes.Interface
	clk     clock.Clock
	log     *slog.Logger
	answers *cache.LRUExpireCache
	limit   *rate.Limiter
	// inflight makes concurrent requests with the same unanswered token
	// share one review, so a burst of one sender's requests is one review.
	inflight singleflight.Group
	reviews  *prometheus.CounterVec
}

// reviewKey is a cached answer's key: the token's digest (the token itself
// is never kept) and, when authorizing, the source it posts to.
type reviewKey struct {
	token  [32]byte
	source signal.Source
}

// verdict is a cached answer; err nil means let in.
type verdict struct{ err error }

func newTokenReviewer(cfg config.TokenReview, rc *rest.Config, clk clock.Clock, log *slog.Logger, reg prometheus.Registerer) (*tokenReviewer, error) {
	if rc == nil {
		var err error
		if rc, err = kubeconfig(cfg.Kubeconfig); err != nil {
			return nil, err
		}
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("receiver.auth.token_review: %w", err)
	}
	t := &tokenReviewer{
		cfg:     cfg,
		client:  client,
		clk:     clk,
		log:     log,
		answers: cache.NewLRUExpireCacheWithClock(cfg.CacheSize, clk),
		limit:   rate.NewLimiter(rate.Limit(cfg.ReviewsPerSecond), cfg.ReviewBurst),
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_receiver_token_reviews_total",
			Help: "Bearer tokens checked with the API server, by result: cached (answered from the cache), authenticated, refused (not a valid token for the audience), forbidden (SubjectAccessReview said no), limited (over reviews_per_second), failed (the API server did not answer).",
		}, []string{"result"}),
	}
	if err := reg.Register(t.reviews); err != nil {
		return nil, err
	}
	return t, nil
}

// kubeconfig loads the API server configuration: the file when given, else
// in-cluster or the usual places.
func kubeconfig(path string) (*rest.Config, error) {
	if path != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("receiver.auth.token_review.kubeconfig %s: %w", path, err)
		}
		return rc, nil
	}
	rc, err := ctrlconfig.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("receiver.auth.token_review: no API server to review tokens with: %w", err)
	}
	return rc, nil
}

// check returns nil when the API server vouches for tok (and, when
// authorizing, allows it to post src), or why not.
func (t *tokenReviewer) check(ctx context.Context, tok string, digest [32]byte, src signal.Source) error {
	key := reviewKey{token: digest}
	if t.cfg.Authorize {
		key.source = src
	}
	if v, ok := t.answers.Get(key); ok {
		t.reviews.WithLabelValues("cached").Inc()
		return v.(verdict).err
	}
	v, _, _ := t.inflight.Do(string(digest[:])+"\x00"+string(key.source), func() (any, error) {
		if v, ok := t.answers.Get(key); ok {
			return v, nil
		}
		if !t.limit.AllowN(t.clk.Now(), 1) {
			t.reviews.WithLabelValues("limited").Inc()
			return verdict{errAuthUnavailable}, nil
		}
		// The review outlives a sender that hung up, since others may
		// be waiting on it, but never the timeout.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.cfg.Timeout)
		defer cancel()
		result, err := t.review(rctx, tok, src)
		t.reviews.WithLabelValues(result).Inc()
		if result == "failed" {
			t.log.Warn("token review failed; refusing the request until the API server answers", "err", err)
			return verdict{errAuthUnavailable}, nil
		}
		t.answers.Add(key, verdict{err}, t.cfg.CacheTTL)
		return verdict{err}, nil
	})
	return v.(verdict).err
}

// review asks the API server and names the result for the metric.
func (t *tokenReviewer) review(ctx context.Context, tok string, src signal.Source) (string, error) {
	tr, err := t.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: tok, Audiences: t.cfg.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return "failed", fmt.Errorf("TokenReview: %w", err)
	}
	// An audience-aware API server answers with the audiences the token
	// and the review share; none means the token is for someone else.
	if !tr.Status.Authenticated || !slices.ContainsFunc(tr.Status.Audiences, func(a string) bool { return slices.Contains(t.cfg.Audiences, a) }) {
		return "refused", errUnauthorized
	}
	if !t.cfg.Authorize {
		return "authenticated", nil
	}
	u := tr.Status.User
	extra := make(map[string]authzv1.ExtraValue, len(u.Extra))
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := t.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{
			User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
			ResourceAttributes: &authzv1.ResourceAttributes{
				Namespace: t.cfg.Namespace, Verb: sarVerb, Group: sarGroup, Resource: sarResource, Name: string(src),
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "failed", fmt.Errorf("SubjectAccessReview: %w", err)
	}
	if !sar.Status.Allowed {
		return "forbidden", errForbidden
	}
	return "authenticated", nil
}
