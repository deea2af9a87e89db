package writer

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/config"
)

// EnvironmentUnknown is the environment of a namespace no rule matched.
const EnvironmentUnknown = "unknown"

// Classifier decides a namespace's environment and an incident's priority.
// It reads only informer caches, so classifying costs no API call.
type Classifier struct {
	cache     client.Reader
	labelKeys []string
	override  *types.NamespacedName
	patterns  []envPattern
	rules     []config.PriorityRule
}

type envPattern struct {
	re  *regexp.Regexp
	env string
}

// NewClassifier compiles the environment rules and priority matrix of a
// validated cfg (config.Writer.Validate); cache must serve Namespaces and,
// when an override ConfigMap is configured, that ConfigMap.
func NewClassifier(cfg config.Writer, cache client.Reader) (*Classifier, error) {
	c := &Classifier{cache: cache, labelKeys: cfg.Environment.LabelKeys, rules: cfg.Priority}
	if ref := cfg.Environment.OverrideConfigMap; ref != "" {
		ns, name, _ := strings.Cut(ref, "/")
		c.override = &types.NamespacedName{Namespace: ns, Name: name}
	}
	for i, p := range cfg.Environment.Patterns {
		re, err := regexp.Compile(p.Match)
		if err != nil {
			return nil, fmt.Errorf("writer.environment.patterns[%d]: %w", i, err)
		}
		c.patterns = append(c.patterns, envPattern{re: re, env: p.Environment})
	}
	return c, nil
}

// Environment classifies namespace ns: its labels (configured keys, in
// order), then the override ConfigMap (key = namespace name), then the
// name patterns, else EnvironmentUnknown. ns need not exist.
func (c *Classifier) Environment(ctx context.Context, ns string) (string, error) {
	env, _, err := c.EnvironmentRule(ctx, ns)
	return env, err
}

// EnvironmentRule is Environment with the rule that decided, in words
// recorded on the request and in its write record: `label env on
// namespace prod-eu`, `override ConfigMap ns/name`, `pattern "^prod-"`
// (writer.environment.patterns[0]), or `no rule matched`.
func (c *Classifier) EnvironmentRule(ctx context.Context, ns string) (env, rule string, err error) {
	if ns == "" {
		return EnvironmentUnknown, "no namespace", nil
	}
	var nsObj corev1.Namespace
	switch err := c.cache.Get(ctx, types.NamespacedName{Name: ns}, &nsObj); {
	case err == nil:
		for _, k := range c.labelKeys {
			if v := nsObj.Labels[k]; v != "" {
				return v, fmt.Sprintf("label %s on namespace %s", k, ns), nil
			}
		}
	case !apierrors.IsNotFound(err):
		return "", "", fmt.Errorf("reading namespace %s from cache: %w", ns, err)
	}
	if c.override != nil {
		var cm corev1.ConfigMap
		switch err := c.cache.Get(ctx, *c.override, &cm); {
		case err == nil:
			if v := strings.TrimSpace(cm.Data[ns]); v != "" {
				return v, fmt.Sprintf("override ConfigMap %s, key %s", c.override, ns), nil
			}
		case !apierrors.IsNotFound(err):
			return "", "", fmt.Errorf("reading environment override %s from cache: %w", c.override, err)
		}
	}
	for i, p := range c.patterns {
		if p.re.MatchString(ns) {
			return p.env, fmt.Sprintf("writer.environment.patterns[%d] %q", i, p.re.String()), nil
		}
	}
	return EnvironmentUnknown, "no rule matched", nil
}

// Priority returns the priority of the first rule matching severity and
// environment ("" or "*" match anything); P2 when none does.
func (c *Classifier) Priority(severity, environment string) string {
	return Priority(c.rules, severity, environment)
}

// PriorityRule is Priority with the rule that decided, in words.
func (c *Classifier) PriorityRule(severity, environment string) (priority, rule string) {
	return PriorityRule(c.rules, severity, environment)
}

// Priority applies rules in order; the first match wins, P2 when none does.
func Priority(rules []config.PriorityRule, severity, environment string) string {
	p, _ := PriorityRule(rules, severity, environment)
	return p
}

// PriorityRule is Priority with the rule that decided:
// `writer.priority[1] (severity critical, environment *)`, or `no rule
// matched (default P2)`.
func PriorityRule(rules []config.PriorityRule, severity, environment string) (priority, rule string) {
	match := func(rule, v string) bool { return rule == "" || rule == "*" || rule == v }
	any := func(v string) string {
		if v == "" {
			return "*"
		}
		return v
	}
	for i, r := range rules {
		if match(r.Severity, severity) && match(r.Environment, environment) {
			return r.Priority, fmt.Sprintf("writer.priority[%d] (severity %s, environment %s)", i, any(r.Severity), any(r.Environment))
		}
	}
	return "P2", "no rule matched (default P2)"
}
