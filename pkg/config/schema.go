package config

import (
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/agnivade/levenshtein"
	"github.com/go-viper/mapstructure/v2"
)

// OtherEnv are the STORMWEIR_* environment variables that set no
// configuration key but are read by stormweir's own tools, so Load lets
// them pass while it rejects every other unknown STORMWEIR_* variable:
//
//   - STORMWEIR_CONFIG: the configuration file, read by Load itself;
//   - STORMWEIR_TOKEN: the bearer token of `stormweir loadgen`;
//   - STORMWEIR_KUBECONFIG: the kubeconfig docker-compose.yml mounts for
//     the writer;
//   - STORMWEIR_<USER>_PASSWORD for the users receiver, deduper,
//     aggregator, writer and admin: the passwords deploy/nats/accounts.conf
//     reads from nats-server's environment, which a shell or a Secret may
//     share with the stages';
//   - STORMWEIR_TEST_REDIS, STORMWEIR_TEST_NATS_LOG,
//     STORMWEIR_ALERTMANAGER_BIN: the test environment's Redis, server log
//     and Alertmanager binary; the tests start the stage binaries with
//     their own environment.
var OtherEnv = []string{
	EnvPrefix + "_CONFIG",
	EnvPrefix + "_TOKEN",
	EnvPrefix + "_KUBECONFIG",
	EnvPrefix + "_RECEIVER_PASSWORD",
	EnvPrefix + "_DEDUPER_PASSWORD",
	EnvPrefix + "_AGGREGATOR_PASSWORD",
	EnvPrefix + "_WRITER_PASSWORD",
	EnvPrefix + "_ADMIN_PASSWORD",
	EnvPrefix + "_TEST_REDIS",
	EnvPrefix + "_TEST_NATS_LOG",
	EnvPrefix + "_ALERTMANAGER_BIN",
}

// schema is the configuration's keys as Config's mapstructure tags name
// them: what the environment may set, and the names a misspelled key or
// variable is compared with to suggest the one meant.
type schema struct {
	// children lists the keys of each section ("" is the root); the
	// entries of a list of sections are the section "name[]", e.g.
	// "writer.priority[]".
	children map[string][]string
	// env maps each environment variable that sets a key to the key.
	env map[string]string
}

func newSchema() *schema {
	s := &schema{children: map[string][]string{}, env: map[string]string{}}
	s.walk(reflect.TypeOf(Config{}), "", true)
	return s
}

// walk records t's keys under section; byEnv says whether the environment
// can set them (not inside list entries).
func (s *schema) walk(t reflect.Type, section string, byEnv bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("mapstructure")
		if name == "" {
			continue
		}
		key := name
		if section != "" {
			key = section + "." + name
		}
		s.children[section] = append(s.children[section], name)
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath():
			// A section: its keys are set one by one.
			s.walk(f.Type, key, byEnv)
			continue
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			s.walk(f.Type.Elem(), key+"[]", false)
		}
		if byEnv {
			s.env[EnvPrefix+"_"+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = key
		}
	}
}

// checkEnv reports every STORMWEIR_* variable of environ that sets no key
// and is not one of OtherEnv: viper reads only the variables of known
// keys, so a misspelled one would otherwise be ignored without a word.
func (s *schema) checkEnv(environ []string) []error {
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") && s.env[name] == "" && !slices.Contains(OtherEnv, name) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	errs := make([]error, 0, len(unknown))
	for _, name := range unknown {
		errs = append(errs, fmt.Errorf("unknown environment variable %s%s", name, s.suggestEnv(name)))
	}
	return errs
}

func (s *schema) suggestEnv(name string) string {
	names := slices.Concat(slices.Sorted(maps.Keys(s.env)), OtherEnv)
	best := closest(strings.TrimPrefix(name, EnvPrefix+"_"), names, func(n string) string { return strings.TrimPrefix(n, EnvPrefix+"_") })
	switch {
	case best == "":
		return ""
	case s.env[best] != "":
		return fmt.Sprintf(" (did you mean %s, which sets %s?)", best, s.env[best])
	default:
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
}

// listIndex matches the index of a list entry in a key path.
var listIndex = regexp.MustCompile(`\[\d+\]`)

// suggestKey proposes the key of the same section closest to key.
func (s *schema) suggestKey(key string) string {
	section, name := "", key
	if i := strings.LastIndex(key, "."); i >= 0 {
		section, name = key[:i], key[i+1:]
	}
	best := closest(name, s.children[listIndex.ReplaceAllString(section, "[]")], nil)
	if best == "" {
		return ""
	}
	if section != "" {
		best = section + "." + best
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// closest returns the candidate nearest to word by edit distance (of
// what trim leaves of it), or "" when none is near enough to be a typo.
func closest(word string, candidates []string, trim func(string) string) string {
	best, bestD := "", max(2, len(word)/3)+1
	for _, c := range candidates {
		t := c
		if trim != nil {
			t = trim(c)
		}
		if d := levenshtein.ComputeDistance(strings.ToLower(word), strings.ToLower(t)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// invalidKeys starts mapstructure's report of keys (ErrorUnused) a
// section does not have.
const invalidKeys = "has invalid keys: "

// decodeProblems lists what mapstructure found, one error each: an
// unknown key becomes "unknown key <path>" with the key probably meant.
func (s *schema) decodeProblems(err error) []error {
	if err == nil {
		return nil
	}
	root := reflect.TypeOf(Config{}).String()
	var out []error
	var walk func(error)
	walk = func(e error) {
		if de, ok := e.(*mapstructure.DecodeError); ok {
			if keys, ok := strings.CutPrefix(de.Unwrap().Error(), invalidKeys); ok {
				section := de.Name()
				if section == root {
					section = ""
				}
				for k := range strings.SplitSeq(keys, ", ") {
					if section != "" {
						k = section + "." + k
					}
					out = append(out, fmt.Errorf("unknown key %s%s", k, s.suggestKey(k)))
				}
				return
			}
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, c := range j.Unwrap() {
				walk(c)
			}
			return
		}
		// mapstructure wraps several problems in one "decoding failed"
		// error; its parts say more on their own.
		if w, ok := e.(interface{ Unwrap() error }); ok {
			if j, ok := w.Unwrap().(interface{ Unwrap() []error }); ok {
				walk(j.(error))
				return
			}
		}
		out = append(out, e)
	}
	walk(err)
	return out
}
